"""Every bad input a user can give raises a typed error whose message names the problem."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import clt_for, get_model, random_clt
from safetensors.torch import load_file, save_file

from tl_clt import (
    CheckpointError,
    CLTConfig,
    ConfigError,
    CrossLayerTranscoder,
    InputError,
    Intervention,
    ModelMismatchError,
    ReplacementModel,
    UnknownHookError,
    attribute,
    feature_effects,
)
from tl_clt.config import ModelIdentity, WeightProcessing
from tl_clt.prune import PruneSpec
from tl_clt.viz.neuronpedia import to_neuronpedia


def _saved(tmp: Path, **kw) -> Path:
    random_clt(2, 32, 6, **kw).save_pretrained(tmp)
    return tmp


def _edit_config(tmp: Path, **changes) -> Path:
    _saved(tmp)
    data = json.loads((tmp / "config.json").read_text())
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    (tmp / "config.json").write_text(json.dumps(data))
    # the weights file carries its own copy of the config: drop it, so config.json is read (as
    # for a transcoder saved before the copy existed)
    weights = tmp / "model.safetensors"
    save_file(load_file(weights), weights, metadata={"format": "tl_clt/1"})
    return tmp


def _truncate(tmp: Path) -> Path:
    _saved(tmp)
    path = tmp / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return tmp


def _splice(lens_kw: dict, **clt_kw) -> ReplacementModel:
    lens = get_model(**lens_kw)
    return ReplacementModel(lens, random_clt(**clt_kw))


gpt2 = {"family": "gpt2"}
ident = get_model("gpt2").identity()

CASES: list[tuple[str, Callable[[Path], object], type[Exception], str]] = [
    (
        "zero width",
        lambda t: CLTConfig(2, 8, 0),
        ConfigError,
        "n_features must be a positive integer",
    ),
    (
        "negative width",
        lambda t: CLTConfig(2, 8, -4),
        ConfigError,
        "n_features must be a positive integer",
    ),
    (
        "zero layers",
        lambda t: CLTConfig(0, 8, 4),
        ConfigError,
        "n_layers must be a positive integer",
    ),
    (
        "k > width",
        lambda t: CLTConfig(2, 8, 4, activation="topk", k=5),
        ConfigError,
        "k=5 exceeds n_features=4",
    ),
    ("topk without k", lambda t: CLTConfig(2, 8, 4, activation="topk"), ConfigError, "needs k"),
    ("k for relu", lambda t: CLTConfig(2, 8, 4, k=2), ConfigError, "only applies to activation"),
    (
        "unknown architecture",
        lambda t: CLTConfig(2, 8, 4, architecture="dense"),
        ConfigError,
        "architecture='dense' is not one of",
    ),
    (
        "unknown activation",
        lambda t: CLTConfig(2, 8, 4, activation="gelu"),
        ConfigError,
        "activation='gelu' is not one of",
    ),
    (
        "unknown input hook",
        lambda t: CLTConfig(2, 8, 4, input_hook="hook_resid_pre"),
        ConfigError,
        "input_hook='hook_resid_pre'",
    ),
    ("unknown dtype", lambda t: CLTConfig(2, 8, 4, dtype="int8"), ConfigError, "dtype='int8'"),
    (
        "identity shape vs config",
        lambda t: CLTConfig(2, 8, 4, model=ModelIdentity("m", 3, 8, 10)),
        ConfigError,
        "n_layers=3",
    ),
    (
        "config missing a field",
        lambda t: CrossLayerTranscoder.from_pretrained(_edit_config(t, n_features=...)),
        ConfigError,
        "missing required field.*n_features",
    ),
    (
        "config unknown field",
        lambda t: CrossLayerTranscoder.from_pretrained(_edit_config(t, colour="red")),
        ConfigError,
        "unknown field.*colour",
    ),
    (
        "config edited width",
        lambda t: CrossLayerTranscoder.from_pretrained(_edit_config(t, n_features=9)),
        CheckpointError,
        "W_enc.*has shape .* config implies",
    ),
    (
        "wrong dtype in file",
        lambda t: CrossLayerTranscoder.from_pretrained(_edit_config(t, dtype="float16")),
        CheckpointError,
        "is torch.float32, but the config says torch.float16",
    ),
    (
        "architecture edited",
        lambda t: CrossLayerTranscoder.from_pretrained(_edit_config(t, activation="jumprelu")),
        CheckpointError,
        "missing tensors \\['threshold'\\]",
    ),
    (
        "truncated safetensors",
        lambda t: CrossLayerTranscoder.from_pretrained(_truncate(t)),
        CheckpointError,
        "truncated",
    ),
    (
        "missing weights file",
        lambda t: (
            (_saved(t) / "model.safetensors").unlink() or CrossLayerTranscoder.from_pretrained(t)
        ),
        CheckpointError,
        "model.safetensors does not exist",
    ),
    (
        "not a directory",
        lambda t: CrossLayerTranscoder.from_pretrained(t / "nowhere"),
        CheckpointError,
        "config.json does not exist",
    ),
    (
        "config not JSON",
        lambda t: (
            (_saved(t) / "config.json").write_text("{") and CrossLayerTranscoder.from_pretrained(t)
        ),
        CheckpointError,
        "not valid JSON",
    ),
    (
        "wrong d_model",
        lambda t: _splice(gpt2, n_layers=2, d_model=16),
        ModelMismatchError,
        "d_model=16 but the model has .*d_model=32",
    ),
    (
        "wrong layer count",
        lambda t: _splice(gpt2, n_layers=3, d_model=32),
        ModelMismatchError,
        "n_layers=3.* model has n_layers=2",
    ),
    (
        "mismatched model name",
        lambda t: _splice(
            gpt2, n_layers=2, d_model=32, model=ModelIdentity("other-model", 2, 32, 64)
        ),
        ModelMismatchError,
        "name: transcoder has 'other-model'",
    ),
    (
        "mismatched weight processing",
        lambda t: _splice(
            gpt2,
            n_layers=2,
            d_model=32,
            model=ModelIdentity(ident.name, 2, 32, 64, WeightProcessing(fold_ln=True)),
        ),
        ModelMismatchError,
        "fold_ln: transcoder has True, model has False",
    ),
    (
        "resid_mid on a parallel model",
        lambda t: _splice({"family": "neox"}, n_layers=2, d_model=32, input_hook="hook_resid_mid"),
        ModelMismatchError,
        "parallel.*no hook_resid_mid",
    ),
    (
        "unknown model hook",
        lambda t: get_model("gpt2").hook("blocks.0.hook_mlp_outt"),
        UnknownHookError,
        "no hook 'blocks.0.hook_mlp_outt'",
    ),
    (
        "unknown clt hook",
        lambda t: ReplacementModel(get_model("gpt2"), clt_for(get_model("gpt2"))).run_with_hooks(
            get_model("gpt2").tokens("w1"),
            fwd_hooks=[("clt.blocks.0.hook_feat", lambda x, hook: x)],
        ),
        UnknownHookError,
        "no hook 'clt.blocks.0.hook_feat'",
    ),
    (
        "layer out of range",
        lambda t: get_model("gpt2").mlp_out(7),
        InputError,
        "layer 7 is out of range",
    ),
    ("empty prompt", lambda t: get_model("gpt2").tokens("   "), InputError, "prompt is empty"),
    (
        "prompt longer than context",
        lambda t: get_model("gpt2").tokens(" ".join(["w1"] * 40)),
        InputError,
        "context is 32",
    ),
    (
        "token id out of vocabulary",
        lambda t: get_model("gpt2").tokens(torch.tensor([[0, 99]])),
        InputError,
        "token ids must lie in",
    ),
    (
        "target word not in the vocabulary",
        lambda t: _trace(targets=["zebra"]),
        InputError,
        "target 'zebra' is not in the tokenizer's vocabulary.*'<unk>'",
    ),
    (
        "target of two tokens",
        lambda t: _trace(targets=["w3 w4"]),
        InputError,
        "target 'w3 w4' is 2 tokens, not one",
    ),
    (
        "target id out of vocabulary",
        lambda t: _trace(targets=[10**6]),
        InputError,
        "target token id 1000000 is outside the vocabulary",
    ),
    (
        "attribute in circuit-tracer's order",
        lambda t: attribute(
            "w1 w2 w3", ReplacementModel(get_model("gpt2"), clt_for(get_model("gpt2")))
        ),
        InputError,
        r"attribute\(replacement, prompt\): the ReplacementModel comes first and the prompt second",
    ),
    (
        "attribute option given by position",
        lambda t: attribute(
            ReplacementModel(get_model("gpt2"), clt_for(get_model("gpt2"))), "w1", ["w2"]
        ),
        TypeError,
        "positional argument",
    ),
    (
        "feature_effects target of two tokens",
        lambda t: _effects(targets=["w3 w4"]),
        InputError,
        "target 'w3 w4' is 2 tokens, not one",
    ),
    (
        "a pruned graph exported with other thresholds",
        lambda t: to_neuronpedia(_trace().prune(0.8), "x", prune=PruneSpec(0.5)),
        InputError,
        "pruned with .*pass the unpruned graph",
    ),
]


def _effects(**kw):
    lens = get_model("gpt2")
    rm = ReplacementModel(lens, clt_for(lens))
    return feature_effects(rm, "w1 w2 w3", [Intervention(0, 0, 1, scale=0.0)], **kw)


def _trace(**kw):
    lens = get_model("gpt2")
    return attribute(ReplacementModel(lens, clt_for(lens)), "w1 w2 w3", **kw)


@pytest.mark.parametrize(("name", "make", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_typed_error(tmp_path, name, make, error, message):
    with pytest.raises(error, match=message):
        make(tmp_path)


def test_the_table_is_long_enough():
    assert len(CASES) >= 12
