"""Per-batch statistics of a training step, reduced over processes and accumulated by the
metric callbacks: squared errors and output moments per layer (for NMSE), active-feature counts
per layer (L0), firing counts per feature (dead features) and, for BatchTopK, the smallest
selected activation per layer (its inference threshold; inf for the other activations)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from tl_clt.clt import CrossLayerTranscoder
from tl_clt.training.losses import Forward


class BatchStats(NamedTuple):
    n_tokens: Tensor  # scalar, float64
    sq_err: Float[Tensor, " n_layers"]  # Σ ‖ŷ − y‖² (model units, float64)
    sum_y: Float[Tensor, "n_layers d_model"]  # Σ y
    sum_y2: Float[Tensor, " n_layers"]  # Σ ‖y‖²
    l0: Float[Tensor, " n_layers"]  # Σ over tokens of the number of active features
    firing: Float[Tensor, "n_layers n_features"]  # tokens on which each feature fired
    min_selected: Float[Tensor, " n_layers"]  # smallest active value (inf if none)


def batch_stats(
    clt: CrossLayerTranscoder, fwd: Forward, y: Float[Tensor, "n n_layers d_model"]
) -> BatchStats:
    """Statistics of one batch (no gradients)."""
    f64 = torch.float64
    with torch.no_grad():  # per-token terms in float32, sums over tokens in float64
        y32 = y.float()
        err = (fwd.recon.float() - y32).pow(2).sum(-1).sum(0, dtype=f64)
        sum_y2 = y32.pow(2).sum(-1).sum(0, dtype=f64)
        firing, min_sel = _firing(clt, fwd)
        return BatchStats(
            torch.tensor(float(y.shape[0]), dtype=f64, device=y.device),
            err, y32.sum(0, dtype=f64), sum_y2, firing.sum(-1), firing, min_sel,
        )  # fmt: skip


def _firing(clt: CrossLayerTranscoder, fwd: Forward) -> tuple[Tensor, Tensor]:
    firing = fwd.features.firing(clt.cfg.n_features)
    low = clt.activation.threshold_statistic(fwd.features)
    if low is None:  # min_selected is only needed for BatchTopK
        low = torch.full(
            (clt.cfg.n_layers,), float("inf"), dtype=torch.float64, device=firing.device
        )
    return firing, low


def reduce_stats(stats: BatchStats, env) -> BatchStats:
    """Sum (min for `min_selected`) the statistics over processes."""
    if not env.enabled:
        return stats
    for field in stats[:-1]:
        env.all_reduce_(field, "sum")
    env.all_reduce_(stats.min_selected, "min")
    return stats


def add_stats(a: BatchStats | None, b: BatchStats) -> BatchStats:
    """Accumulate `b` into `a` (sums; min for `min_selected`)."""
    if a is None:
        return BatchStats(*(t.clone() for t in b))
    return BatchStats(
        *(x + y for x, y in zip(a[:-1], b[:-1])), torch.minimum(a.min_selected, b.min_selected)
    )
