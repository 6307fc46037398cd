"""`tl-clt train` on a local checkpoint directory and a text file: writes a loadable transcoder
with its metrics; bad configs fail with a clear message; the default model is the shipped one
when the package has it."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from _training_helpers import texts as make_texts

from tl_clt import CrossLayerTranscoder
from tl_clt.cli import main
from tl_clt.commands.train import resolve_model
from tl_clt.errors import InputError
from tl_clt.lens import Lens
from tl_clt.lens.build import tiny_hf_model
from tl_clt.tokenization import SPECIALS, word_level_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    hf = tiny_hf_model("gpt2", n_layers=2, d_model=32, d_mlp=64, n_ctx=32)
    hf.save_pretrained(directory)
    word_level_tokenizer([f"w{i}" for i in range(hf.config.vocab_size - len(SPECIALS))], directory)
    return directory


def test_train_command_writes_the_transcoder_and_its_metrics(model_dir, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(make_texts(60, lo=8, hi=30)) + "\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "clt": {"n_features": 24, "activation": "relu"},
        "train": {"steps": 6, "batch_size": 64, "log_every": 3, "eval_every": 6},
        "data": {"seq_len": 16, "holdout_sequences": 6, "buffer_tokens": 256, "streaming": True},
    }))  # fmt: skip
    out = tmp_path / "out"
    argv = ["train", "--model", str(model_dir), "--text", str(corpus), "--config", str(config),
            "--out", str(out), "--activation", "topk", "--k", "4", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "spliced/top1" in printed and str(out) in printed
    clt = CrossLayerTranscoder.from_pretrained(out)
    assert (clt.cfg.activation, clt.cfg.k, clt.cfg.n_features) == ("topk", 4, 24)  # flags win
    assert clt.cfg.model.name == model_dir.name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "nmse" in r] == [3, 6]
    assert (out / "curves.png").is_file() and (out / "checkpoints" / "latest").is_file()
    lens = Lens(resolve_model(str(model_dir)).model)
    assert torch.isfinite(clt(torch.randn(3, lens.n_layers, lens.d_model))).all()


def test_bad_config_files_fail_with_a_message(model_dir, tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("w1 w2 w3\n")
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"train": {"stepz": 3}}))
    argv = ["train", "--model", str(model_dir), "--text", str(corpus), "--config", str(config),
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    assert "unknown field(s) ['stepz']" in capsys.readouterr().err
    config.write_text(json.dumps({"model": {}}))
    assert main(argv) == 2
    assert "'clt', 'train' and 'data'" in capsys.readouterr().err
    argv[argv.index("--text") + 1] = str(tmp_path / "missing.txt")
    argv[argv.index("--config") + 1] = str(tmp_path / "none.json")
    assert main(argv) == 2


def test_default_model_is_the_shipped_one_when_installed():
    if importlib.util.find_spec("tl_clt.toy") is None:
        with pytest.raises(InputError, match="no shipped model"):
            resolve_model(None)
    else:
        from tl_clt import toy

        lens = resolve_model(None)
        assert lens.n_layers == Lens(toy.load_lens()).n_layers


def _train_parser():
    import argparse

    from tl_clt.commands import train as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser, {a.dest: a for a in parser._actions}


def test_flags_come_from_the_config_dataclasses():
    import dataclasses
    import typing

    from tl_clt.config import field_docs
    from tl_clt.training import DataConfig, TrainConfig
    from tl_clt.training.config import Autocast

    _, actions = _train_parser()
    for cls, skip in ((TrainConfig, {"betas", "loss"}), (DataConfig, set())):
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            action = actions[f.name]
            assert action.default is None  # unset flags leave the config file's value
            assert action.help.startswith(field_docs(cls)[f.name]), f.name
    assert actions["architecture"].choices == ["cross_layer", "per_layer", "shared"]
    assert actions["activation"].choices == ["relu", "jumprelu", "topk", "batchtopk"]
    assert actions["autocast"].choices == list(typing.get_args(Autocast)) == ["off", "bf16"]
    assert actions["lr"].help == "Adam learning rate. (default: 0.002)"
    assert actions["seq_len"].type is int and actions["lr"].type is float
    assert "BatchTopKLoss" in actions["loss_threshold_decay"].help


def test_flags_override_the_config_file_section_by_section(tmp_path):
    from tl_clt.commands.train import configs_from_args
    from tl_clt.errors import ConfigError
    from tl_clt.training import BatchTopKLoss, DataConfig, TrainConfig

    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "clt": {"activation": "batchtopk", "k": 2},
        "train": {"steps": 5, "lr": 0.1},
        "data": {"seq_len": 16, "split": "validation"},
    }))  # fmt: skip
    parser, _ = _train_parser()
    args = parser.parse_args([
        "--text", "t.txt", "--out", "o", "--config", str(config), "--lr", "0.01",
        "--no-normalise", "--autocast", "bf16", "--loss-aux-coefficient", "0.5",
        "--loss-threshold-decay", "0.9", "--holdout-sequences", "3", "--streaming",
    ])  # fmt: skip
    clt, train, data = configs_from_args(args)
    assert clt == {"activation": "batchtopk", "k": 2}
    assert train == {
        "steps": 5, "lr": 0.01, "normalise": False, "autocast": "bf16",
        "loss": {"activation": "batchtopk", "aux_coefficient": 0.5, "threshold_decay": 0.9},
    }  # fmt: skip
    assert TrainConfig.from_dict(train).loss == BatchTopKLoss(0.5, None, 0.9)
    assert data == DataConfig(seq_len=16, holdout_sequences=3, split="validation", streaming=True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--text", "t", "--out", "o", "--autocast", "fp8"])
    args = parser.parse_args(["--text", "t", "--out", "o", "--loss-tanh-c", "2"])
    _, train, _ = configs_from_args(args)  # the default activation, relu, has no tanh_c
    with pytest.raises(ConfigError, match=r"ReLULoss\) has unknown field\(s\) \['tanh_c'\]"):
        TrainConfig.from_dict(train)
