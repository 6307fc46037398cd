"""Planted sparse dictionaries: MLP-like activations built from known feature directions, to
check that a trainer recovers them (and to benchmark training without a model).

Each token activates exactly `n_active` planted features per layer, with amplitudes in
[0.5, 1.5]. A feature read at layer s adds amplitude × its input direction to x^s and
amplitude × its output direction for layer t to y^t, for every layer t it writes to: for
"cross_layer", layers s.. (a quarter of the features skip layer s and write to later layers
only); for "per_layer" and "shared", layer s alone ("shared" uses the same directions at every
layer). Layers get different scales, so normalisation matters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from tl_clt.activations.source import ActivationBatch
from tl_clt.clt import CrossLayerTranscoder
from tl_clt.config import Architecture


class PlantedDictionary(NamedTuple):
    architecture: Architecture
    enc: Float[Tensor, "n_layers n_true d_model"]  # input directions (unit norm)
    dec: Float[Tensor, "n_layers n_true n_layers d_model"]  # [source, feature, target, d]
    bias: Float[Tensor, "n_layers d_model"]  # constant part of each layer's output
    in_scale: Float[Tensor, " n_layers"]
    out_scale: Float[Tensor, " n_layers"]
    n_active: int


def planted_dictionary(
    architecture: Architecture,
    n_layers: int,
    d_model: int,
    n_true: int,
    n_active: int,
    seed: int = 0,
) -> PlantedDictionary:
    """A random planted dictionary of `n_true` features per layer."""
    g = torch.Generator().manual_seed(seed)
    L = n_layers

    def unit(*shape: int) -> Tensor:
        v = torch.randn(*shape, d_model, generator=g)
        return v / v.norm(dim=-1, keepdim=True)

    shared = architecture == "shared"
    enc = unit(1, n_true).expand(L, -1, -1).clone() if shared else unit(L, n_true)
    dec = torch.zeros(L, n_true, L, d_model)
    for s in range(L):
        if architecture == "cross_layer":
            for t in range(s, L):
                dec[s, :, t] = unit(n_true) * torch.empty(n_true, 1).uniform_(0.4, 1.0, generator=g)
            if s < L - 1:
                dec[s, : n_true // 4, s] = 0.0  # these write to later layers only
        else:
            dec[s, :, s] = dec[0, :, 0] if shared and s else unit(n_true)
    bias = 0.3 * torch.randn(L, d_model, generator=g)
    in_scale = 2.0 ** torch.arange(L, dtype=torch.float32)
    out_scale = 3.0 ** torch.arange(L, dtype=torch.float32)
    return PlantedDictionary(architecture, enc, dec, bias, in_scale, out_scale, n_active)


def sample(
    planted: PlantedDictionary, n_tokens: int, generator: torch.Generator
) -> ActivationBatch:
    """`n_tokens` tokens of planted activations."""
    L, n_true, d = planted.enc.shape
    scores = torch.rand(n_tokens, L, n_true, generator=generator)
    chosen = scores.topk(planted.n_active, dim=-1).indices
    amp = torch.zeros(n_tokens, L, n_true)
    amp.scatter_(-1, chosen, torch.empty(chosen.shape).uniform_(0.5, 1.5, generator=generator))
    x = torch.einsum("nlf,lfd->nld", amp, planted.enc) * planted.in_scale[:, None]
    y = torch.einsum("nsf,sftd->ntd", amp, planted.dec) + planted.bias
    return ActivationBatch(x, y * planted.out_scale[:, None])


class PlantedBatches:
    """Resumable batches of planted activations: batch i depends only on (seed, i), or with
    `pool`, on (seed, i mod pool) (a finite data set, cheaper to serve)."""

    def __init__(self, planted: PlantedDictionary, seed: int = 0, pool: int | None = None) -> None:
        self.planted, self.seed, self.pool = planted, seed, pool
        self._memo: dict[tuple[int, int], ActivationBatch] = {}

    def batch(self, batch_size: int, i: int) -> ActivationBatch:
        if self.pool is not None:
            i %= self.pool
            if (batch_size, i) not in self._memo:
                self._memo[batch_size, i] = self._sample(batch_size, i)
            return self._memo[batch_size, i]
        return self._sample(batch_size, i)

    def _sample(self, batch_size: int, i: int) -> ActivationBatch:
        return sample(
            self.planted, batch_size, torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        )

    def batches(self, batch_size: int, start: int = 0) -> Iterator[ActivationBatch]:
        i = start
        while True:
            yield self.batch(batch_size, i)
            i += 1


def recovery(
    clt: CrossLayerTranscoder, planted: PlantedDictionary
) -> Float[Tensor, "n_enc n_features"]:
    """For every learned feature, the best cosine between its decoder (concatenated over the
    layers it writes to, in model units) and a planted feature's at the same source layer."""
    L = clt.cfg.n_layers
    sources = range(1) if clt.cfg.shared else range(L)
    out = []
    with torch.no_grad():
        for s in sources:
            targets = list(clt.writes_to(s))
            learned = torch.cat([clt.W_dec_at(s, t).float().cpu() for t in targets], dim=-1)
            true = torch.cat([planted.dec[s, :, t] * planted.out_scale[t] for t in targets], dim=-1)
            learned = learned / learned.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            true = true / true.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            out.append((learned @ true.T).max(dim=-1).values)
    return torch.stack(out)
