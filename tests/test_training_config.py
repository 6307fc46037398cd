"""`TrainConfig`'s per-activation loss settings: nested, validated, matched to the
transcoder's activation, round-tripped through JSON, and read from the flat form that earlier
versions wrote (the shipped transcoder's train_config.json and quality record among them)."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from _training_helpers import small_clt

from tl_clt.errors import ConfigError
from tl_clt.training import (
    BatchTopKLoss,
    JumpReLULoss,
    ReLULoss,
    TopKLoss,
    TrainConfig,
    Trainer,
)

FLAT_DEFAULTS = {  # the flat loss keys of earlier versions, at their defaults then
    "decoder_norm_weighting": True, "tanh_c": 1.0, "preact_coefficient": 1e-4,
    "jumprelu_bandwidth": 0.01, "jumprelu_threshold_init": 0.05, "aux_coefficient": 1 / 32,
    "aux_k": None, "batchtopk_threshold_decay": 0.99,
}  # fmt: skip


def test_each_activation_gets_its_own_loss_defaults():
    cfg = TrainConfig()
    assert cfg.loss is None
    assert cfg.loss_for("relu") == ReLULoss(decoder_norm_weighting=True)
    assert cfg.loss_for("jumprelu") == JumpReLULoss(1.0, 1e-4, 0.01, 0.05)
    assert cfg.loss_for("topk") == TopKLoss(1 / 32, None)
    assert cfg.loss_for("batchtopk") == BatchTopKLoss(1 / 32, None, 0.99)


def test_a_loss_for_another_activation_is_refused():
    cfg = TrainConfig(loss=JumpReLULoss())
    with pytest.raises(ConfigError, match="JumpReLULoss.*'topk'.*TopKLoss"):
        Trainer(small_clt("topk"), cfg)
    with pytest.raises(ConfigError, match="loss must be a JSON object with an 'activation'"):
        TrainConfig.from_dict({"loss": {"tanh_c": 1.0}})
    with pytest.raises(ConfigError, match="JumpReLULoss.tanh_c must be > 0"):
        JumpReLULoss(tanh_c=0.0)
    with pytest.raises(ConfigError, match="BatchTopKLoss.threshold_decay must lie in"):
        BatchTopKLoss(threshold_decay=1.5)
    with pytest.raises(ConfigError, match="TopKLoss.aux_k must be a positive integer"):
        TopKLoss(aux_k=0)


@pytest.mark.parametrize(
    "loss", [None, ReLULoss(False), JumpReLULoss(2.0, 0.5, 0.1, 0.2), TopKLoss(0.5, 7),
             BatchTopKLoss(0.25, 3, 0.5)],
)  # fmt: skip
def test_nested_loss_round_trips_through_json(loss):
    cfg = TrainConfig(steps=9, loss=loss)
    data = json.loads(json.dumps(cfg.to_dict()))
    if loss is not None:
        assert data["loss"]["activation"] == loss.activation
    assert TrainConfig.from_dict(data) == cfg


def test_the_shipped_flat_train_config_loads_into_the_nested_form():
    files = resources.files("tl_clt.toy") / "weights" / "clt"
    flat = json.loads((files / "train_config.json").read_text())
    clt = json.loads((files / "config.json").read_text())
    assert "aux_coefficient" in flat and "loss" not in flat  # written by an earlier version
    cfg = TrainConfig.from_dict(flat, activation=clt["activation"])
    assert cfg.loss == TopKLoss(aux_coefficient=0.25, aux_k=None)
    assert (cfg.steps, cfg.sparsity_coefficient, cfg.eval_every) == (4000, 3e-3, 1000)
    quality = json.loads((files / "quality.json").read_text())
    assert TrainConfig.from_dict(quality["train"], activation="topk") == cfg
    # without the activation, a non-default flat value cannot be placed
    with pytest.raises(ConfigError, match="aux_coefficient=0.25.*activation"):
        TrainConfig.from_dict(flat)


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk", "batchtopk"])
def test_flat_keys_map_to_each_activations_fields(activation):
    flat = {**FLAT_DEFAULTS, "decoder_norm_weighting": False, "tanh_c": 3.0,
            "preact_coefficient": 0.5, "jumprelu_bandwidth": 0.2, "jumprelu_threshold_init": 0.3,
            "aux_coefficient": 0.125, "aux_k": 5, "batchtopk_threshold_decay": 0.9}  # fmt: skip
    want = {
        "relu": ReLULoss(decoder_norm_weighting=False),
        "jumprelu": JumpReLULoss(tanh_c=3.0, preact_coefficient=0.5, bandwidth=0.2,
                                 threshold_init=0.3),
        "topk": TopKLoss(aux_coefficient=0.125, aux_k=5),
        "batchtopk": BatchTopKLoss(aux_coefficient=0.125, aux_k=5, threshold_decay=0.9),
    }  # fmt: skip
    assert (
        TrainConfig.from_dict({"steps": 3, **flat}, activation=activation).loss == want[activation]
    )
    # flat keys at their defaults need no activation: they are every activation's defaults
    assert TrainConfig.from_dict({"steps": 3, **FLAT_DEFAULTS}) == TrainConfig(steps=3)
    with pytest.raises(ConfigError, match="both 'loss' and the flat loss keys"):
        TrainConfig.from_dict({"tanh_c": 1.0, "loss": {"activation": "relu"}})
