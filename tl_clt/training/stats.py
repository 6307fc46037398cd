"""Per-batch statistics of a training step, reduced over processes and accumulated by the
metric callbacks: squared errors and output moments per layer (for NMSE), active-feature counts
per layer (L0), firing counts per feature (dead features) and, for BatchTopK, the smallest
selected activation per layer (its inference threshold; inf for the other activations)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from tl_clt.clt import CrossLayerTranscoder, RaggedFeatures, SparseFeatures
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
    L, F = clt.cfg.n_layers, clt.cfg.n_features
    device = fwd.pre.device
    inf = torch.tensor(float("inf"), device=device, dtype=torch.float64)
    none = inf.expand(L).clone()  # min_selected is only needed for BatchTopK
    if fwd.acts is not None:
        return (fwd.acts > 0).sum(0).double(), none  # no float copy of [n, L, F]
    if isinstance(fwd.sparse, SparseFeatures):
        idx, val = fwd.sparse.indices, fwd.sparse.values  # [n, L, k]
        counts = torch.zeros(L, F, dtype=torch.float64, device=device)
        on = (val > 0).double().transpose(0, 1).reshape(L, -1)
        counts.scatter_add_(1, idx.transpose(0, 1).reshape(L, -1), on)
        return counts, none
    assert isinstance(fwd.sparse, RaggedFeatures)
    counts, mins = [], []
    for idx, val in zip(fwd.sparse.indices, fwd.sparse.values):
        on = val > 0
        counts.append(torch.bincount(idx[on], minlength=F).double())
        mins.append(val[on].double().min() if bool(on.any()) else inf)
    return torch.stack(counts), torch.stack(mins)


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
