"""Training losses for transcoders (Ameisen et al. 2025, "Circuit Tracing", section
"Architecture", and its appendix on training): the terms as pure functions of the transcoder
and a batch, and one class per activation (`ReLULoss`, `JumpReLULoss`, `TopKLoss`,
`BatchTopKLoss`) that holds its coefficients, weighs its terms and does what training does to
its threshold. `TrainConfig.loss` holds one of them.

- reconstruction: Σ_l mean over tokens of ‖ŷ^l − y^l‖² / d_model, in normalised units (each
  layer's output times its `output_scale`), so that no layer dominates;
- ReLU (an L1 penalty): λ Σ_i |a_i|, optionally times each feature's decoder norm;
- JumpReLU (the paper's): λ Σ_i tanh(c ‖W_dec,i‖ a_i) with ‖W_dec,i‖ the norm of feature i's
  concatenated decoders, plus λ_P Σ_i ReLU(θ_i − h_i) ‖W_dec,i‖ against dead features;
- TopK / BatchTopK: no sparsity penalty; AuxK reconstructs the residual error from the
  top-k_aux dead features, to revive them.

The forward pass is the transcoder's own (`clt.encode_features(x, hooks=False)`). TopK and
BatchTopK decode through `CrossLayerTranscoder.decode_sparse`: only the active features'
decoder rows are read, never a dense [tokens, layers, features] activation tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tl_clt.clt import CrossLayerTranscoder
from tl_clt.errors import ConfigError
from tl_clt.nonlinearity import Features, JumpReLU, Nonlinearity, SparseFeatures


class Forward(NamedTuple):
    """A training forward pass: pre-activations, the active features (`DenseFeatures` for ReLU
    and JumpReLU, `SparseFeatures` for TopK, `RaggedFeatures` for BatchTopK) and the
    reconstruction in model units."""

    pre: Float[Tensor, "n n_layers n_features"]
    features: Features
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
    activation: Nonlinearity | None = None,
    dense_decode: bool = False,
) -> Forward:
    """Encode and decode a batch the way training needs it: the transcoder's own encoding
    path without hook points (`activation` replaces its configured one). `dense_decode`
    decodes TopK / BatchTopK densely through every decoder (one matmul per source layer: the
    faster choice on a GPU), else from the active features' decoder rows only."""
    pre, features = clt.encode_features(x, hooks=False, activation=activation)
    if dense_decode:
        return Forward(pre, features, clt.decode(features.dense(clt.cfg.n_features), x))
    return Forward(pre, features, features.decode(clt, x))


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
    contrib = clt.decode_sparse(SparseFeatures(indices, values), skip=False) - clt.b_dec
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
    """The total loss for the transcoder's activation function (`config` is a TrainConfig,
    whose loss settings for that activation weigh the terms; `sparsity` is λ at this step;
    `dead` marks dead features for AuxK)."""
    loss = config.loss_for(clt.cfg.activation)
    fwd = forward(clt, x, loss.nonlinearity(clt), dense_decode)
    mse = reconstruction_loss(fwd.recon, y, clt.output_scale).sum()
    return loss.parts(clt, fwd, y, mse, sparsity, dead), fwd


# ---------------------------------------------------------------------- per-activation losses
class ActivationLoss:
    """The training side of one activation kind: its sparsity penalty, its coefficients and
    what training does to its threshold. `activation` is the `CLTConfig.activation` it
    belongs to; `legacy` maps the flat `TrainConfig` keys of earlier versions to its fields."""

    activation: ClassVar[str]
    legacy: ClassVar[dict[str, str]] = {}
    #: Whether the loss reads the dead-feature mask (AuxK).
    uses_dead_features: ClassVar[bool] = False

    def nonlinearity(self, clt: CrossLayerTranscoder) -> Nonlinearity:
        """The activation function training encodes with."""
        return clt.activation

    def parts(
        self,
        clt: CrossLayerTranscoder,
        fwd: Forward,
        y: Tensor,
        mse: Tensor,
        sparsity: float,
        dead: Tensor | None,
    ) -> LossParts:
        """The total and its parts: mse plus the weighted terms of this activation."""
        zero = mse.new_zeros(())
        return LossParts(mse, mse, zero, zero, zero)

    def initialise(self, clt: CrossLayerTranscoder) -> None:
        """Before the first step (no gradients)."""

    def after_step(self, clt: CrossLayerTranscoder) -> None:
        """After each optimizer step (no gradients)."""

    def update_threshold(self, clt: CrossLayerTranscoder, statistic: Tensor, step: int) -> None:
        """After each step, with the batch's `Nonlinearity.threshold_statistic` (no gradients)."""

    def _check(self, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = (),
               unit: tuple[str, ...] = ()) -> None:  # fmt: skip
        name = type(self).__name__
        for field in positive:
            if not getattr(self, field) > 0:
                raise ConfigError(f"{name}.{field} must be > 0, got {getattr(self, field)!r}")
        for field in non_negative:
            if getattr(self, field) < 0:
                raise ConfigError(f"{name}.{field} must be >= 0, got {getattr(self, field)!r}")
        for field in unit:
            if not 0 <= getattr(self, field) <= 1:
                raise ConfigError(
                    f"{name}.{field} must lie in [0, 1], got {getattr(self, field)!r}"
                )


@dataclass(frozen=True)
class ReLULoss(ActivationLoss):
    """ReLU: the sparsity penalty λ Σ_i |a_i| (λ: `TrainConfig.sparsity_coefficient`).

    Attributes:
        decoder_norm_weighting: weight the L1 penalty by each feature's decoder norm.
    """

    decoder_norm_weighting: bool = True
    activation: ClassVar[str] = "relu"
    legacy: ClassVar[dict[str, str]] = {"decoder_norm_weighting": "decoder_norm_weighting"}

    def parts(self, clt, fwd, y, mse, sparsity, dead):
        norms = clt.decoder_norms() if self.decoder_norm_weighting else None
        term = l1_penalty(fwd.features.acts, norms)
        zero = mse.new_zeros(())
        return LossParts(mse + sparsity * term, mse, term, zero, zero)


@dataclass(frozen=True)
class JumpReLULoss(ActivationLoss):
    """JumpReLU (the paper's): λ Σ_i tanh(c ‖W_dec,i‖ a_i) plus λ_P Σ_i ReLU(θ_i − h_i) ‖W_dec,i‖
    against dead features (λ: `TrainConfig.sparsity_coefficient`).

    Attributes:
        tanh_c: c in the penalty. The paper's c ≈ 4 saturates tanh for every active feature in
            these (normalised) units, leaving a pure L0 penalty that gives the encoders no
            signal; c = 1 recovered planted dictionaries faster.
        preact_coefficient: λ_P of the pre-activation loss (tuned on the planted-dictionary
            test, where the paper's 3e-6, which belongs to its own units, left ~10% of the
            features dead).
        bandwidth: width of the straight-through rectangle kernel around θ.
        threshold_init: θ to start from when the transcoder's thresholds are all 0 (a zero
            threshold gets no gradient from the sparsity penalty: the jump has size θ).
    """

    tanh_c: float = 1.0
    preact_coefficient: float = 1e-4
    bandwidth: float = 0.01
    threshold_init: float = 0.05
    activation: ClassVar[str] = "jumprelu"
    legacy: ClassVar[dict[str, str]] = {
        "tanh_c": "tanh_c",
        "preact_coefficient": "preact_coefficient",
        "jumprelu_bandwidth": "bandwidth",
        "jumprelu_threshold_init": "threshold_init",
    }

    def __post_init__(self) -> None:
        self._check(positive=("tanh_c", "bandwidth"),
                    non_negative=("preact_coefficient", "threshold_init"))  # fmt: skip

    def nonlinearity(self, clt):
        return JumpReLU(self.bandwidth)

    def parts(self, clt, fwd, y, mse, sparsity, dead):
        norms = clt.decoder_norms()
        term = tanh_penalty(fwd.features.acts, norms, self.tanh_c)
        preact = preact_penalty(fwd.pre, clt.threshold, norms)
        total = mse + sparsity * term + self.preact_coefficient * preact
        return LossParts(total, mse, term, preact, mse.new_zeros(()))

    def initialise(self, clt):
        if not bool(clt.threshold.any()):
            clt.threshold.fill_(self.threshold_init)

    def after_step(self, clt):
        clt.threshold.clamp_(min=0.0)  # θ < 0 would let features fire negative


@dataclass(frozen=True)
class TopKLoss(ActivationLoss):
    """TopK: no sparsity penalty; AuxK reconstructs the residual error from the top-k_aux dead
    features, to revive them (Gao et al. 2024).

    Attributes:
        aux_coefficient: weight of the AuxK loss.
        aux_k: dead features per token and layer used by AuxK (None: 2k).
    """

    aux_coefficient: float = 1 / 32
    aux_k: int | None = None
    activation: ClassVar[str] = "topk"
    legacy: ClassVar[dict[str, str]] = {"aux_coefficient": "aux_coefficient", "aux_k": "aux_k"}
    uses_dead_features: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self._check(non_negative=("aux_coefficient",))
        k = self.aux_k
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k <= 0):
            raise ConfigError(
                f"{type(self).__name__}.aux_k must be a positive integer or None, got {k!r}"
            )

    def parts(self, clt, fwd, y, mse, sparsity, dead):
        zero = mse.new_zeros(())
        if dead is None or not self.aux_coefficient > 0:
            return LossParts(mse, mse, zero, zero, zero)
        residual = ((y - fwd.recon) * clt.output_scale[:, None]).detach()
        aux = auxk_loss(clt, fwd.pre, dead, residual, self.aux_k or 2 * clt.cfg.k)
        return LossParts(mse + self.aux_coefficient * aux, mse, zero, zero, aux)


@dataclass(frozen=True)
class BatchTopKLoss(TopKLoss):
    """BatchTopK: TopK's AuxK, and the moving average that estimates the inference threshold.

    Attributes:
        aux_coefficient: weight of the AuxK loss.
        aux_k: dead features per token and layer used by AuxK (None: 2k).
        threshold_decay: decay of the moving average that estimates the inference threshold
            (the smallest selected activation per layer).
    """

    threshold_decay: float = 0.99
    activation: ClassVar[str] = "batchtopk"
    legacy: ClassVar[dict[str, str]] = {
        **TopKLoss.legacy,
        "batchtopk_threshold_decay": "threshold_decay",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check(unit=("threshold_decay",))

    def update_threshold(self, clt, statistic, step):
        low = statistic.min(0, keepdim=True).values if clt.cfg.shared else statistic
        low = torch.where(torch.isfinite(low), low, clt.threshold[:, 0].double())
        decay = 0.0 if step == 0 else self.threshold_decay
        clt.threshold.mul_(decay).add_(low.to(clt.threshold.dtype)[:, None], alpha=1 - decay)


#: The loss settings of each activation, by `CLTConfig.activation`.
LOSSES: dict[str, type[ActivationLoss]] = {
    c.activation: c for c in (ReLULoss, JumpReLULoss, TopKLoss, BatchTopKLoss)
}


def loss_from_dict(data: Any, what: str = "loss") -> ActivationLoss:
    """A loss config from its JSON form ({"activation": name, **fields})."""
    from tl_clt.config import _construct

    if not isinstance(data, dict) or data.get("activation") not in LOSSES:
        raise ConfigError(
            f"{what} must be a JSON object with an 'activation' among {sorted(LOSSES)}; got {data!r}"
        )
    data = dict(data)
    name = data.pop("activation")
    return _construct(LOSSES[name], data, f"{what} ({LOSSES[name].__name__})")
