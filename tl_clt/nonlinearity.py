"""Feature nonlinearities: ReLU, JumpReLU (with straight-through threshold gradients), TopK and
BatchTopK. Pure functions on pre-activations `h` of shape [..., n_features]."""

from __future__ import annotations

import torch
from jaxtyping import Float
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
