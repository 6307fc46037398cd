"""The planted-dictionary test: MLP-like data built from known sparse feature directions (some
features writing to later layers only); every architecture with every activation recovers the
dictionary (at least 90% of learned decoders within cosine 0.9 of a planted one) and reaches a
mean NMSE ≤ 0.05 (no layer above 0.08) on fresh samples, in the model's units (after folding
the normalisation into the weights). The training loops run without jaxtyping's run-time
checks (the same code is shape-checked by the short tests)."""

from __future__ import annotations

import pytest
import torch
from _training_helpers import small_clt, unchecked

from tl_clt.training import (
    BatchTopKLoss,
    JumpReLULoss,
    ReLULoss,
    TopKLoss,
    TrainConfig,
    Trainer,
    TrainingMetrics,
)
from tl_clt.training.synthetic import PlantedBatches, planted_dictionary, recovery, sample

N_LAYERS, D_MODEL, N_TRUE, N_ACTIVE = 2, 32, 48, 2  # 1.5x overcomplete per layer
STEPS = 700
SPARSITY = {"relu": 1.2e-2, "jumprelu": 2.5e-2, "topk": 0.0, "batchtopk": 0.0}
LOSS = {
    "relu": ReLULoss(),
    "jumprelu": JumpReLULoss(tanh_c=1.0, preact_coefficient=1e-4),
    "topk": TopKLoss(aux_coefficient=0.25),
    "batchtopk": BatchTopKLoss(aux_coefficient=0.25),
}


def planted_config(activation: str, steps: int) -> TrainConfig:
    return TrainConfig(
        steps=steps, batch_size=256, lr=1e-2, warmup_steps=20, log_every=50,
        sparsity_coefficient=SPARSITY[activation], loss=LOSS[activation],
        firing_decay=0.95, dead_threshold=1e-3,
    )  # fmt: skip


def nmse(clt, batch) -> torch.Tensor:
    with torch.no_grad():
        err = (clt(batch.x) - batch.y).pow(2).sum(-1).sum(0)
    return err / (batch.y - batch.y.mean(0)).pow(2).sum(-1).sum(0)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk", "batchtopk"])
@pytest.mark.parametrize("architecture", ["cross_layer", "per_layer", "shared"])
def test_each_architecture_recovers_a_planted_dictionary(architecture, activation):
    planted = planted_dictionary(architecture, N_LAYERS, D_MODEL, N_TRUE, N_ACTIVE, seed=1)
    clt = small_clt(activation, architecture, N_LAYERS, D_MODEL, N_TRUE, k=N_ACTIVE)
    trainer = Trainer(clt, planted_config(activation, STEPS), [TrainingMetrics(50)])
    with unchecked():
        trainer.fit(PlantedBatches(planted, pool=64))
    first, last = trainer.history[0], trainer.history[-1]
    if activation in ("relu", "jumprelu"):  # sparsity came from training: L0 fell to ~N_ACTIVE
        assert last["l0"] < first["l0"] / 3 and last["l0"] < 2 * N_ACTIVE * N_LAYERS
    if activation == "jumprelu":  # the thresholds moved (directly parameterised, not log θ)
        assert clt.threshold.mean() > 5 * planted_config(activation, STEPS).loss.threshold_init
    clt.fold_scales()
    clt.eval()
    test = sample(planted, 4096, torch.Generator().manual_seed(999))
    per_layer = nmse(clt, test)
    cos = recovery(clt, planted)
    assert per_layer.mean() <= 0.05 and per_layer.max() <= 0.08, per_layer
    assert (cos >= 0.9).float().mean() >= 0.9, cos
