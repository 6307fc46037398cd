"""Feature nonlinearities: ReLU, JumpReLU (with straight-through threshold gradients), TopK and
BatchTopK, as pure functions on pre-activations `h` of shape [..., n_features] and as one object
per kind (`ReLU`, `JumpReLU`, `TopK`, `BatchTopK`), which a transcoder builds from its config.

Each object owns the activation's two forms: `dense(h, threshold, training)` (one layer, through
the transcoder's hook points) and `sparse(pre, thresholds, training)` (every layer of a batch at
once, no dense [tokens, layers, features] tensor for TopK and BatchTopK), plus `compact(acts)`,
the representation a dense result is decoded from. The active features come as one of three
`Features` types, each with `.dense(n_features)`, `.firing(n_features)` and `.decode(clt)`:
`DenseFeatures` (ReLU, JumpReLU), `SparseFeatures` (k per token and layer) and `RaggedFeatures`
(a variable count per token: BatchTopK in training).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

#: Default bandwidth of the rectangle kernel that gives JumpReLU thresholds a gradient.
DEFAULT_BANDWIDTH = 1e-3


def _rectangle(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    """a = h * 1[h > theta]; the threshold's gradient comes from a rectangle kernel of width
    `bandwidth` around theta (Rajamanoharan et al. 2024), since the true one is zero a.e."""

    @staticmethod
    def forward(ctx, h: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(h, threshold)
        ctx.bandwidth = bandwidth
        return h * (h > threshold).to(h.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_h = grad * (h > threshold).to(h.dtype)
        grad_t = -(threshold / eps) * _rectangle((h - threshold) / eps) * grad
        return grad_h, _sum_to(grad_t, threshold.shape), None


class _Step(torch.autograd.Function):
    """Heaviside step 1[h > theta] with the same straight-through threshold gradient; used to
    count active features (L0) differentiably."""

    @staticmethod
    def forward(ctx, h: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(h, threshold)
        ctx.bandwidth = bandwidth
        return (h > threshold).to(h.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_t = -(1.0 / eps) * _rectangle((h - threshold) / eps) * grad
        return torch.zeros_like(h), _sum_to(grad_t, threshold.shape), None


def _sum_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Reduce a broadcast gradient back to `shape`."""
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    for dim, size in enumerate(shape):
        if size == 1 and grad.shape[dim] != 1:
            grad = grad.sum(dim, keepdim=True)
    return grad


def relu(h: Float[Tensor, "... f"]) -> Float[Tensor, "... f"]:
    return torch.relu(h)


def jumprelu(
    h: Float[Tensor, "... f"], threshold: Float[Tensor, " f"], bandwidth: float = DEFAULT_BANDWIDTH
) -> Float[Tensor, "... f"]:
    return _JumpReLU.apply(h, threshold, bandwidth)


def step(
    h: Float[Tensor, "... f"], threshold: Float[Tensor, " f"], bandwidth: float = DEFAULT_BANDWIDTH
) -> Float[Tensor, "... f"]:
    return _Step.apply(h, threshold, bandwidth)


def topk(h: Float[Tensor, "... f"], k: int) -> Float[Tensor, "... f"]:
    """Keep each token's k largest pre-activations (ReLU'd); zero the rest."""
    values, indices = h.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(h).scatter(-1, indices, torch.relu(values))


def batchtopk(h: Float[Tensor, "... f"], k: int) -> Float[Tensor, "... f"]:
    """Keep the k * n_tokens largest pre-activations over all tokens of the batch (ReLU'd), so
    tokens share a budget of k features each on average."""
    flat = h.reshape(-1)
    n_tokens = flat.numel() // h.shape[-1]
    budget = min(k * n_tokens, flat.numel())
    values, indices = flat.topk(budget, sorted=False)
    return torch.zeros_like(flat).scatter(0, indices, torch.relu(values)).reshape(h.shape)


# ---------------------------------------------------------------------- active features
class DenseFeatures(NamedTuple):
    """Activations at every layer, zeros included (ReLU, JumpReLU)."""

    acts: Float[Tensor, "... n_layers n_features"]

    def dense(self, n_features: int | None = None) -> Tensor:
        return self.acts

    def firing(self, n_features: int | None = None) -> Float[Tensor, "n_layers n_features"]:
        """Tokens on which each feature fired, per layer (float64; acts [n, n_layers, F])."""
        return (self.acts > 0).sum(0).double()  # no float copy of [n, L, F]

    def decode(self, clt: Any, x: Tensor | None = None) -> Float[Tensor, "... n_layers d_model"]:
        return clt.decode(self.acts, x)


class SparseFeatures(NamedTuple):
    """Active features of N tokens, padded to k per token and layer (padding has value 0)."""

    indices: Int[Tensor, "n_tokens n_layers k"]
    values: Float[Tensor, "n_tokens n_layers k"]

    def bag(self, layer: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """(ids, values, offsets) of one source layer, as `F.embedding_bag` takes them."""
        return self.indices[:, layer], self.values[:, layer], None

    def dense(self, n_features: int) -> Float[Tensor, "n_tokens n_layers n_features"]:
        zeros = self.values.new_zeros(*self.indices.shape[:-1], n_features)
        return zeros.scatter_(-1, self.indices, self.values)

    def firing(self, n_features: int) -> Float[Tensor, "n_layers n_features"]:
        n, L, k = self.indices.shape
        counts = torch.zeros(L, n_features, dtype=torch.float64, device=self.values.device)
        on = (self.values > 0).double().transpose(0, 1).reshape(L, -1)
        return counts.scatter_add_(1, self.indices.transpose(0, 1).reshape(L, -1), on)

    def decode(
        self, clt: Any, x: Tensor | None = None
    ) -> Float[Tensor, "n_tokens n_layers d_model"]:
        return clt.decode_sparse(self, x=x)


class RaggedFeatures(NamedTuple):
    """Active features of N tokens with a variable count per token and layer (BatchTopK): for
    each source layer, the active features' ids and values in token order, and the offset
    where each token's run starts ([n_tokens], non-decreasing; an empty run decodes to 0)."""

    indices: tuple[Int[Tensor, " nnz"], ...]
    values: tuple[Float[Tensor, " nnz"], ...]
    offsets: tuple[Int[Tensor, " n_tokens"], ...]

    def bag(self, layer: int) -> tuple[Tensor, Tensor, Tensor | None]:
        return self.indices[layer], self.values[layer], self.offsets[layer]

    def dense(self, n_features: int) -> Float[Tensor, "n_tokens n_layers n_features"]:
        n, F = self.offsets[0].numel(), n_features
        layers = []
        for idx, val, off in zip(*self):
            device = val.device
            counts = torch.diff(off, append=off.new_tensor([idx.numel()]))
            rows = torch.repeat_interleave(torch.arange(n, device=device), counts)
            flat = torch.zeros(n * F, dtype=val.dtype, device=device)
            layers.append(flat.index_put((rows * F + idx,), val))
        return torch.stack([t.view(n, F) for t in layers], dim=1)

    def firing(self, n_features: int) -> Float[Tensor, "n_layers n_features"]:
        counts = []
        for idx, val in zip(self.indices, self.values):
            counts.append(torch.bincount(idx[val > 0], minlength=n_features).double())
        return torch.stack(counts)

    def decode(
        self, clt: Any, x: Tensor | None = None
    ) -> Float[Tensor, "n_tokens n_layers d_model"]:
        return clt.decode_sparse(self, x=x)


Features = DenseFeatures | SparseFeatures | RaggedFeatures


def to_sparse(
    acts: Float[Tensor, "... n_layers n_features"], k: int | None = None
) -> SparseFeatures:
    """Active features per token and layer, padded to the largest count (or to k)."""
    flat = acts.reshape(-1, *acts.shape[-2:])
    if k is None:
        k = max(int((flat != 0).sum(-1).max()), 1) if flat.numel() else 1
    values, indices = flat.abs().topk(min(k, flat.shape[-1]), dim=-1, sorted=False)
    return SparseFeatures(indices, flat.gather(-1, indices))


# ---------------------------------------------------------------------- one object per kind
class Nonlinearity:
    """The activation function of a transcoder's features (see the subclasses). `threshold`
    says whether the transcoder holds a per-feature threshold, and how: a trained parameter,
    a buffer estimated during training, or none."""

    name: ClassVar[str]
    threshold: ClassVar[Literal["parameter", "buffer"] | None] = None
    #: The activation's name in circuit-tracer's CLT layout (None: the layout has none).
    circuit_tracer_name: ClassVar[str | None] = None

    def dense(
        self, h: Float[Tensor, "... n_features"], threshold: Tensor | None, training: bool
    ) -> Float[Tensor, "... n_features"]:
        """Activations of one layer from its pre-activations (`threshold`: that layer's)."""
        raise NotImplementedError

    def sparse(
        self,
        pre: Float[Tensor, "n n_layers n_features"],
        thresholds: Sequence[Tensor | None],
        training: bool,
    ) -> Features:
        """The active features of a batch at every layer (`thresholds[l]`: layer l's). Decodes
        to the same reconstruction as `compact` of the stacked `dense` forms."""
        return self.compact(
            torch.stack(
                [self.dense(h, t, training) for h, t in zip(pre.unbind(1), thresholds)], dim=1
            )
        )

    def compact(self, acts: Float[Tensor, "... n_layers n_features"]) -> Features:
        """The representation dense activations are decoded from (TopK and BatchTopK flatten
        the tokens)."""
        return DenseFeatures(acts)

    def threshold_statistic(self, features: Features) -> Tensor | None:
        """Per layer, the statistic a buffer threshold is estimated from (None: no threshold
        is estimated)."""
        return None

    @classmethod
    def from_config(cls, cfg: Any) -> Nonlinearity:
        return cls()


@dataclass(frozen=True)
class ReLU(Nonlinearity):
    """a = max(h, 0)."""

    name: ClassVar[str] = "relu"
    circuit_tracer_name: ClassVar[str | None] = "relu"

    def dense(self, h, threshold, training):
        return relu(h)

    def sparse(self, pre, thresholds, training):
        return DenseFeatures(relu(pre))  # elementwise: every layer at once


@dataclass(frozen=True)
class JumpReLU(Nonlinearity):
    """a = h · 1[h > θ] with a per-feature threshold θ, trained through a straight-through
    rectangle kernel of width `bandwidth` (Rajamanoharan et al. 2024)."""

    bandwidth: float = DEFAULT_BANDWIDTH
    name: ClassVar[str] = "jumprelu"
    threshold: ClassVar[Literal["parameter", "buffer"] | None] = "parameter"
    circuit_tracer_name: ClassVar[str | None] = "jump_relu"

    def dense(self, h, threshold, training):
        return jumprelu(h, threshold, self.bandwidth)


@dataclass(frozen=True)
class TopK(Nonlinearity):
    """Each token's k largest pre-activations per layer (ReLU'd); the rest zero."""

    k: int
    name: ClassVar[str] = "topk"

    @classmethod
    def from_config(cls, cfg: Any) -> TopK:
        return cls(cfg.k)

    def dense(self, h, threshold, training):
        return topk(h, self.k)

    def sparse(self, pre, thresholds, training):
        values, indices = pre.topk(self.k, dim=-1, sorted=False)  # every layer at once
        return SparseFeatures(indices, torch.relu(values))

    def compact(self, acts):
        return to_sparse(acts, self.k)  # exactly k per token and layer


@dataclass(frozen=True)
class BatchTopK(Nonlinearity):
    """In training, per layer the k·n largest pre-activations of a batch of n tokens (ReLU'd):
    k per token on average. At inference, h · 1[h > θ] with a per-layer threshold θ estimated
    in training (the running average of the smallest selected activation)."""

    k: int
    name: ClassVar[str] = "batchtopk"

    @classmethod
    def from_config(cls, cfg: Any) -> BatchTopK:
        return cls(cfg.k)

    threshold: ClassVar[Literal["parameter", "buffer"] | None] = "buffer"

    def dense(self, h, threshold, training):
        if training:
            return batchtopk(h, self.k)
        return h * (h > threshold).to(h.dtype)

    def sparse(self, pre, thresholds, training):
        if not training:
            return super().sparse(pre, thresholds, training)
        n, L, F = pre.shape
        indices, values, offsets = [], [], []
        for layer in range(L):
            flat = pre[:, layer].reshape(-1)
            chosen = flat.topk(min(self.k * n, flat.numel()), sorted=False).indices.sort().values
            token = torch.div(chosen, F, rounding_mode="floor")
            counts = torch.bincount(token, minlength=n)
            indices.append(chosen - token * F)
            values.append(torch.relu(flat[chosen]))
            offsets.append(torch.cumsum(counts, 0) - counts)
        return RaggedFeatures(tuple(indices), tuple(values), tuple(offsets))

    def compact(self, acts):
        return to_sparse(acts)  # k per token on average: padded to the largest count

    def threshold_statistic(self, features):
        """Per layer, the smallest selected (positive) activation of a training batch's
        `RaggedFeatures`; inf where none is."""
        mins = []
        for val in features.values:
            on = val > 0
            inf = torch.tensor(float("inf"), dtype=torch.float64, device=val.device)
            mins.append(val[on].double().min() if bool(on.any()) else inf)
        return torch.stack(mins)


#: The activation objects by their config name (`CLTConfig.activation`).
KINDS: dict[str, type[Nonlinearity]] = {c.name: c for c in (ReLU, JumpReLU, TopK, BatchTopK)}


def from_config(cfg: Any) -> Nonlinearity:
    """The activation object of a `CLTConfig`."""
    return KINDS[cfg.activation].from_config(cfg)
