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
