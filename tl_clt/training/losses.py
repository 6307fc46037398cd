"""Training losses for transcoders, as pure functions of the transcoder and a batch
(Ameisen et al. 2025, "Circuit Tracing", section "Architecture", and its appendix on training).

- reconstruction: Σ_l mean over tokens of ‖ŷ^l − y^l‖² / d_model, in normalised units (each
  layer's output times its `output_scale`), so that no layer dominates;
- ReLU (an L1 penalty): λ Σ_i |a_i|, optionally times each feature's decoder norm;
- JumpReLU (the paper's): λ Σ_i tanh(c ‖W_dec,i‖ a_i) with ‖W_dec,i‖ the norm of feature i's
  concatenated decoders, plus λ_P Σ_i ReLU(θ_i − h_i) ‖W_dec,i‖ against dead features;
- TopK / BatchTopK: no sparsity penalty; AuxK reconstructs the residual error from the
  top-k_aux dead features, to revive them.

TopK and BatchTopK decode through `CrossLayerTranscoder.decode_sparse`: only the active
features' decoder rows are read, never a dense [tokens, layers, features] activation tensor.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tl_clt import nonlinearity
from tl_clt.clt import CrossLayerTranscoder, RaggedFeatures, SparseFeatures


class Forward(NamedTuple):
    """A training forward pass: pre-activations, the active features (dense for ReLU and
    JumpReLU, sparse for TopK and BatchTopK) and the reconstruction in model units."""

    pre: Float[Tensor, "n n_layers n_features"]
    acts: Float[Tensor, "n n_layers n_features"] | None
    sparse: SparseFeatures | RaggedFeatures | None
    recon: Float[Tensor, "n n_layers d_model"]


class LossParts(NamedTuple):
    total: Tensor
    mse: Tensor
    sparsity: Tensor
    preact: Tensor
    aux: Tensor


def forward(
    clt: CrossLayerTranscoder,
    x: Float[Tensor, "n n_layers d_model"],
    bandwidth: float,
    dense_decode: bool = False,
) -> Forward:
    """Encode and decode a batch the way training needs it (no hook points). `dense_decode`
    decodes TopK / BatchTopK densely through every decoder (one matmul per source layer: the
    faster choice on a GPU), else from the active features' decoder rows only."""
    pre = clt.pre_activations(x)
    act = clt.cfg.activation
    if act in ("relu", "jumprelu"):
        if act == "relu":
            acts = torch.relu(pre)
        else:
            acts = torch.stack(
                [
                    nonlinearity.jumprelu(p, clt.threshold_at(i), bandwidth)
                    for i, p in enumerate(pre.unbind(1))
                ],
                dim=1,
            )
        return Forward(pre, acts, None, clt.decode(acts))
    sparse = topk_features(pre, clt.cfg.k) if act == "topk" else batchtopk_features(pre, clt.cfg.k)
    if dense_decode:
        return Forward(pre, None, sparse, clt.decode(_densify(sparse, pre)))
    return Forward(pre, None, sparse, clt.decode_sparse(sparse))


def _densify(sparse: SparseFeatures | RaggedFeatures, pre: Tensor) -> Tensor:
    if isinstance(sparse, SparseFeatures):
        return torch.zeros_like(pre).scatter_(-1, sparse.indices, sparse.values)
    n, L, F = pre.shape
    layers = []
    for idx, val, off in zip(*sparse):
        counts = torch.diff(off, append=off.new_tensor([idx.numel()]))
        rows = torch.repeat_interleave(torch.arange(n, device=pre.device), counts)
        layers.append(
            torch.zeros(n * F, dtype=pre.dtype, device=pre.device).index_put((rows * F + idx,), val)
        )
    return torch.stack([t.view(n, F) for t in layers], dim=1)


def topk_features(pre: Float[Tensor, "n n_layers n_features"], k: int) -> SparseFeatures:
    """Each token's k largest pre-activations per layer (ReLU'd)."""
    values, indices = pre.topk(k, dim=-1, sorted=False)
    return SparseFeatures(indices, torch.relu(values))


def batchtopk_features(pre: Float[Tensor, "n n_layers n_features"], k: int) -> RaggedFeatures:
    """Per layer, the k·n largest pre-activations over the whole batch (ReLU'd), grouped by
    token: each token keeps as many features as it won."""
    n, L, F = pre.shape
    indices, values, offsets = [], [], []
    for layer in range(L):
        flat = pre[:, layer].reshape(-1)
        chosen = flat.topk(min(k * n, flat.numel()), sorted=False).indices.sort().values
        token = torch.div(chosen, F, rounding_mode="floor")
        counts = torch.bincount(token, minlength=n)
        indices.append(chosen - token * F)
        values.append(torch.relu(flat[chosen]))
        offsets.append(torch.cumsum(counts, 0) - counts)
    return RaggedFeatures(tuple(indices), tuple(values), tuple(offsets))


def reconstruction_loss(
    recon: Float[Tensor, "n n_layers d_model"],
    y: Float[Tensor, "n n_layers d_model"],
    output_scale: Float[Tensor, " n_layers"],
) -> Float[Tensor, " n_layers"]:
    """Per layer, mean over tokens of ‖ŷ − y‖² / d_model in normalised units."""
    err = (recon - y) * output_scale[:, None]
    return err.float().pow(2).mean(dim=(0, 2))


def l1_penalty(
    acts: Float[Tensor, "n n_layers n_features"],
    dec_norms: Float[Tensor, "n_enc n_features"] | None,
) -> Tensor:
    """Σ_{l,i} |a_i^l| (times ‖W_dec,i‖ when given), mean over tokens."""
    a = acts.abs() if dec_norms is None else acts.abs() * dec_norms
    return a.float().sum(dim=(1, 2)).mean()


def tanh_penalty(
    acts: Float[Tensor, "n n_layers n_features"],
    dec_norms: Float[Tensor, "n_enc n_features"],
    c: float,
) -> Tensor:
    """Σ_{l,i} tanh(c ‖W_dec,i‖ a_i^l), mean over tokens (the paper's sparsity penalty)."""
    return torch.tanh(c * dec_norms * acts).float().sum(dim=(1, 2)).mean()


def preact_penalty(
    pre: Float[Tensor, "n n_layers n_features"],
    threshold: Float[Tensor, "n_enc n_features"],
    dec_norms: Float[Tensor, "n_enc n_features"],
) -> Tensor:
    """Σ_{l,i} ReLU(θ_i − h_i) ‖W_dec,i‖, mean over tokens: pulls dead features' pre-activations
    up towards their thresholds. Only the pre-activations are pulled: left trainable, the
    decoder norms would shrink and the thresholds sink (under Adam, even a tiny but steady
    push moves θ by about lr per step) on every token a feature is off."""
    gap = torch.relu(threshold.detach() - pre)
    return (gap * dec_norms.detach()).float().sum(dim=(1, 2)).mean()


def auxk_loss(
    clt: CrossLayerTranscoder,
    pre: Float[Tensor, "n n_layers n_features"],
    dead: Bool[Tensor, "n_enc n_features"],
    residual: Float[Tensor, "n n_layers d_model"],
    k_aux: int,
) -> Tensor:
    """How well the top-k_aux dead features (per token and layer) reconstruct the residual
    error (normalised units, detached): Σ_l mean ‖ê − e‖² / d_model. Zero if none is dead."""
    if not bool(dead.any()):
        return pre.new_zeros((), dtype=torch.float32)
    k_aux = min(k_aux, pre.shape[-1])
    masked = pre.masked_fill(~dead, float("-inf"))
    values, indices = masked.topk(k_aux, dim=-1, sorted=False)
    values = torch.relu(values).nan_to_num(0.0)
    contrib = clt.decode_sparse(SparseFeatures(indices, values)) - clt.b_dec
    err = contrib * clt.output_scale[:, None] - residual
    return err.float().pow(2).mean(dim=(0, 2)).sum()


def compute_loss(
    clt: CrossLayerTranscoder,
    x: Float[Tensor, "n n_layers d_model"],
    y: Float[Tensor, "n n_layers d_model"],
    *,
    sparsity: float,
    config,
    dead: Bool[Tensor, "n_enc n_features"] | None = None,
    dense_decode: bool = False,
) -> tuple[LossParts, Forward]:
    """The total loss for the transcoder's activation function (`config` is a TrainConfig;
    `sparsity` is λ at this step; `dead` marks dead features for AuxK)."""
    fwd = forward(clt, x, config.jumprelu_bandwidth, dense_decode)
    mse = reconstruction_loss(fwd.recon, y, clt.output_scale).sum()
    zero = mse.new_zeros(())
    sparse_term, preact, aux = zero, zero, zero
    act = clt.cfg.activation
    if act == "relu":
        norms = clt.decoder_norms() if config.decoder_norm_weighting else None
        sparse_term = l1_penalty(fwd.acts, norms)
    elif act == "jumprelu":
        norms = clt.decoder_norms()
        sparse_term = tanh_penalty(fwd.acts, norms, config.tanh_c)
        preact = preact_penalty(fwd.pre, clt.threshold, norms)
    elif dead is not None and config.aux_coefficient > 0:
        residual = ((y - fwd.recon) * clt.output_scale[:, None]).detach()
        aux = auxk_loss(clt, fwd.pre, dead, residual, config.aux_k or 2 * clt.cfg.k)
    total = mse + sparsity * sparse_term + config.preact_coefficient * preact
    total = total + config.aux_coefficient * aux
    return LossParts(total, mse, sparse_term, preact, aux), fwd
