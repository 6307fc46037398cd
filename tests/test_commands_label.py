"""`tl-clt label` and `tl-clt feature` on a small saved model and CLT."""

from __future__ import annotations

from conftest import random_clt

from tl_clt.cli import main
from tl_clt.lens import load_model
from tl_clt.lens.build import tiny_hf_model
from tl_clt.tokenization import word_level_tokenizer


def test_label_then_feature(tmp_path, capsys):
    model_dir, clt_dir = tmp_path / "model", tmp_path / "clt"
    word_level_tokenizer([f"w{i}" for i in range(61)], model_dir)
    tiny_hf_model("gpt2", n_layers=2, d_model=32).save_pretrained(model_dir)
    lens = load_model(model_dir)
    random_clt(2, 32, n_features=6, model=lens.identity()).save_pretrained(clt_dir)
    texts = tmp_path / "texts.txt"
    texts.write_text(
        "\n".join(" ".join(f"w{(7 * i + j) % 61}" for j in range(9)) for i in range(40))
    )
    db, html = tmp_path / "f.db", tmp_path / "f.html"
    args = ["label", "--clt", str(clt_dir), "--model", str(model_dir), "--texts", str(texts),
            "--out", str(db), "--k", "4", "--quiet", "--html", str(html)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "360 tokens" in out and "of 12 features" in out and "above chance" in out
    assert html.read_text().count('id="tl-features"') == 1

    assert main(["feature", "1:2", "--index", str(db), "--html", str(tmp_path / "card.html")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("feature 1:2") and "label (offline): " in out and "top contexts:" in out
    assert "promotes: " in out and (tmp_path / "card.html").stat().st_size > 1_000_000

    assert main(["feature", "9:0", "--index", str(db)]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["feature", "1-2", "--index", str(db)]) == 2
    assert main(["label", "--model", str(model_dir), "--out", str(db)]) == 2


def test_every_command_follows_one_rule_for_model_and_transcoder(tmp_path, capsys):
    """--model and --clt: both or neither, in every subcommand (label used to pair a given
    --clt with the shipped model); a model name that cannot be loaded is a typed error."""
    clt_dir = tmp_path / "clt"
    random_clt(2, 32, n_features=6).save_pretrained(clt_dir)
    for argv in (
        ["label", "--clt", str(clt_dir), "--out", str(tmp_path / "f.db")],
        ["intervene", "w1 w2", "--feature", "0:1", "--scale", "0", "--clt", str(clt_dir)],
        ["trace", "w1 w2", "--clt", str(clt_dir), "--out", str(tmp_path / "g")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"tl-clt {argv[0]}: error: --clt was given without --model" in err, err
    assert not (tmp_path / "f.db").exists() and not (tmp_path / "g").exists()
    missing = str(tmp_path / "no-such-model")
    assert main(["intervene", "w1", "--feature", "0:1", "--scale", "0", "--model", missing,
                 "--clt", str(clt_dir)]) == 2  # fmt: skip
    assert f"cannot load model {missing!r}" in capsys.readouterr().err
