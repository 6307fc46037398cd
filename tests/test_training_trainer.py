"""The training loop: schedules, metrics against brute-force computations, dead features and
the BatchTopK threshold, NaN handling, bf16 autocast, and `train()` from a model and texts to a
saved transcoder directory."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from _training_helpers import lens as make_lens
from _training_helpers import small_clt
from _training_helpers import texts as make_texts

import tl_clt
from tl_clt import CrossLayerTranscoder, TrainingError
from tl_clt.errors import ConfigError, InputError
from tl_clt.training import (
    TrainConfig,
    Trainer,
    TrainingMetrics,
    attach_checkpoints,
    latest_checkpoint,
)


def batches(n: int, size: int = 32, L: int = 2, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(size, L, d, generator=g)
        out.append((x, x @ torch.ones(d, d) * 0.1 + torch.randn(size, L, d, generator=g)))
    return out


def test_learning_rate_and_sparsity_schedules():
    cfg = TrainConfig(steps=100, warmup_steps=10, decay_start=0.8, sparsity_coefficient=2.0,
                      sparsity_warmup=0.5)  # fmt: skip
    assert cfg.lr_factor(0) == pytest.approx(0.1)
    assert cfg.lr_factor(9) == cfg.lr_factor(50) == 1.0
    assert cfg.lr_factor(90) == pytest.approx(0.5)  # halfway through the decay
    assert cfg.sparsity_at(0) == 0.0 and cfg.sparsity_at(25) == pytest.approx(1.0)
    assert cfg.sparsity_at(50) == cfg.sparsity_at(99) == 2.0
    trainer = Trainer(small_clt(), cfg)
    seen = []
    for x, y in batches(12):
        seen.append(trainer.train_step(x, y).lr)
    assert seen == pytest.approx([cfg.lr * cfg.lr_factor(s) for s in range(12)])


def test_config_validation():
    with pytest.raises(ConfigError, match="multiple of log_every"):
        TrainConfig(log_every=10, checkpoint_every=15)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ConfigError, match="decay_start"):
        TrainConfig(decay_start=1.5)
    with pytest.raises(ConfigError, match="unknown field"):
        TrainConfig.from_dict({"stepz": 3})
    data = json.loads(json.dumps(TrainConfig(steps=7).to_dict()))  # betas become a list
    assert TrainConfig.from_dict(data) == TrainConfig(steps=7)


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk", "batchtopk"])
def test_logged_metrics_match_brute_force(activation):
    clt = small_clt(activation, n_layers=2)
    data = batches(2)
    trainer = Trainer(clt, TrainConfig(steps=2, log_every=1, batch_size=32), [TrainingMetrics(1)])
    trainer.initialise(*data[0])
    before = copy.deepcopy(clt)
    trainer.fit(data)
    record = trainer.history[0]  # step 1, computed with the weights before the first update
    x, y = data[0]
    before.train()
    with torch.no_grad():
        pre = before.pre_activations(x)
        if activation == "batchtopk":  # per layer over the batch, as in training
            acts = torch.stack([tl_clt.nonlinearity.batchtopk(pre[:, i], 3) for i in range(2)], 1)
        else:
            acts = before.encode(x)
        recon = before.decode(acts)
    for layer in range(2):
        err = (recon[:, layer] - y[:, layer]).pow(2).sum()
        var = (y[:, layer] - y[:, layer].mean(0)).pow(2).sum()
        assert record["nmse_per_layer"][layer] == pytest.approx(float(err / var), rel=1e-4)
        assert record["l0_per_layer"][layer] == pytest.approx(
            float((acts[:, layer] > 0).sum()) / 32
        )
    assert record["l0"] == pytest.approx(sum(record["l0_per_layer"]))
    assert record["tokens"] == 32 and record["step"] == 1


def test_a_skip_connection_learns_the_linear_part_of_the_map():
    """The targets are a linear map of the inputs plus noise: a skip transcoder (its skip
    connection starting at zero) learns the map and ends with a lower held-out NMSE than the
    same transcoder without one, trained the same way on the same batches."""
    g = torch.Generator().manual_seed(1)
    M = torch.randn(8, 8, generator=g) / 8**0.5

    def batch(size):
        x = torch.randn(size, 2, 8, generator=g)
        return x, x @ M + 0.1 * torch.randn(size, 2, 8, generator=g)

    data, held_out = [batch(32) for _ in range(60)], batch(256)
    nmse = {}
    for skip in (False, True):
        clt = small_clt("topk", n_layers=2, skip=skip, k=2)
        trainer = Trainer(clt, TrainConfig(steps=60, lr=1e-2, batch_size=32, log_every=60))
        trainer.initialise(*data[0])
        trainer.fit(data)
        with torch.no_grad():
            x, y = held_out
            err = (clt(x) - y).pow(2).sum()
            nmse[skip] = float(err / (y - y.mean(0)).pow(2).sum())
        if skip:
            assert clt.W_skip.abs().max() > 1e-2  # it moved from its zero start
    assert nmse[True] < 0.5 * nmse[False], nmse


def test_dead_features_and_batchtopk_threshold():
    clt = small_clt("batchtopk", n_layers=2)
    with torch.no_grad():
        clt.W_enc[:, :, :4] = 0.0
        clt.b_enc[:, :4] = -100.0  # features 0-3 can never fire
    trainer = Trainer(clt, TrainConfig(steps=1, lr=1e-9, normalise=False, init_decoder_bias=False))
    x, y = batches(1)[0]
    with torch.no_grad():
        pre = clt.pre_activations(x)
    out = trainer.train_step(x, y)
    dead = trainer.dead_mask()
    assert dead[:, :4].all()
    fired = torch.stack(
        [(tl_clt.nonlinearity.batchtopk(pre[:, i], 3) > 0).any(0) for i in range(2)]
    )
    assert torch.equal(dead, ~fired)
    # the inference threshold starts at the smallest selected activation of each layer
    for layer in range(2):
        chosen = tl_clt.nonlinearity.batchtopk(pre[:, layer], 3)
        smallest = chosen[chosen > 0].min()
        assert clt.threshold[layer].unique().tolist() == pytest.approx([float(smallest)])
    assert out.step == 1


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    data = batches(8)
    data[5] = (data[5][0].clone().fill_(float("nan")), data[5][1])
    cfg = TrainConfig(steps=8, batch_size=32, log_every=2, checkpoint_every=2)
    trainer = Trainer(small_clt(), cfg)
    attach_checkpoints(trainer, tmp_path / "checkpoints")
    with pytest.raises(TrainingError, match="MLP input activations .* step 6") as info:
        trainer.fit(data)  # a NaN input is refused before it reaches the loss
    assert str(tmp_path / "checkpoints" / "step_00000004") in str(info.value)
    ckpt = latest_checkpoint(tmp_path / "checkpoints")
    assert ckpt.name == "step_00000004"
    reference = Trainer(small_clt(), cfg)  # the same run, stopped by hand after 4 steps
    reference.initialise(*data[0])
    for x, y in data[:4]:
        reference.train_step(x, y)
    reference = reference.clt
    saved = CrossLayerTranscoder(small_clt().cfg)
    from safetensors.torch import load_file

    saved.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    for a, b in zip(saved.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)


def test_bf16_autocast_trains_with_float32_weights():
    clt = small_clt("topk", n_layers=2)
    trainer = Trainer(clt, TrainConfig(steps=3, autocast="bf16", batch_size=32))
    before = clt.W_enc.detach().clone()
    trainer.fit(batches(3))
    assert clt.W_enc.dtype == torch.float32 and not torch.equal(clt.W_enc, before)
    assert all(torch.isfinite(p).all() for p in clt.parameters())


def test_data_that_runs_out_is_an_error():
    with pytest.raises(InputError, match="ran out after 2 of 5"):
        Trainer(small_clt(), TrainConfig(steps=5)).fit(batches(2))
    with pytest.raises(InputError, match=r"\[tokens, 2, 8\]"):
        Trainer(small_clt(), TrainConfig(steps=1)).fit(
            [(torch.zeros(4, 3, 8), torch.zeros(4, 3, 8))]
        )


def test_train_from_texts_writes_a_loadable_transcoder_and_its_metrics(tmp_path):
    lens = make_lens()
    result = tl_clt.train(
        lens, make_texts(80, lo=10, hi=30), {"n_features": 32, "activation": "relu"},
        {"steps": 12, "batch_size": 64, "log_every": 4, "eval_every": 6, "checkpoint_every": 12},
        out_dir=tmp_path, holdout_sequences=8, buffer_tokens=256, progress=False,
    )  # fmt: skip
    clt = result.clt
    assert torch.equal(clt.input_scale, torch.ones(2)) and torch.equal(
        clt.output_scale, torch.ones(2)
    )
    loaded = CrossLayerTranscoder.from_pretrained(tmp_path)
    x = torch.randn(5, 2, 32)
    torch.testing.assert_close(loaded(x), clt(x))
    assert loaded.cfg.model == lens.identity()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "nmse" in r] == [4, 8, 12]
    spliced = [r for r in records if "spliced/top1" in r]
    assert [r["step"] for r in spliced] == [6, 12]
    assert all(0 <= r["spliced/top1"] <= 1 and r["spliced/kl"] >= 0 for r in spliced)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["step"] == 12 and "spliced_bos/ce_recovered" in summary
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step_00000012"
