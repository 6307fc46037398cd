"""`TrainConfig`: every knob of a training run, frozen and validated (the losses these
coefficients weigh are in `tl_clt.training.losses`; Ameisen et al. 2025, "Circuit Tracing",
section "Architecture", and its appendix on training)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from tl_clt.config import _check_choice, _construct
from tl_clt.errors import ConfigError

Autocast = Literal["off", "bf16"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train a transcoder.

    Attributes:
        steps: optimizer steps.
        batch_size: tokens per step, over all processes (each of P processes takes 1/P).
        lr: Adam learning rate; betas: Adam betas.
        warmup_steps: linear learning-rate warm-up from 0.
        decay_start: fraction of `steps` after which the learning rate decays linearly to 0.
        sparsity_coefficient: λ. ReLU: λ Σ|a| (times decoder norms if `decoder_norm_weighting`);
            JumpReLU: λ Σ tanh(c ‖W_dec‖ a). Unused by TopK / BatchTopK.
        sparsity_warmup: fraction of `steps` over which λ ramps up linearly from 0.
        decoder_norm_weighting: weight ReLU's L1 penalty by each feature's decoder norm.
        tanh_c: c in the JumpReLU penalty. The paper's c ≈ 4 saturates tanh for every active
            feature in these (normalised) units, leaving a pure L0 penalty that gives the
            encoders no signal; c = 1 recovered planted dictionaries faster.
        preact_coefficient: λ_P of the pre-activation loss Σ ReLU(θ − h) ‖W_dec‖ (JumpReLU;
            tuned on the planted-dictionary test, where the paper's 3e-6, which belongs to its
            own units, left ~10% of the features dead).
        jumprelu_bandwidth: width of the straight-through rectangle kernel around θ.
        jumprelu_threshold_init: θ to start from when the transcoder's thresholds are all 0 (a
            zero threshold gets no gradient from the sparsity penalty: the jump has size θ).
        aux_coefficient: weight of the AuxK loss (TopK / BatchTopK).
        aux_k: dead features per token and layer used by AuxK (default 2k).
        firing_decay: decay of the per-feature firing-rate moving average (per step).
        dead_threshold: a feature whose average firing rate is below this is dead.
        batchtopk_threshold_decay: decay of the moving average that estimates BatchTopK's
            inference threshold (the smallest selected activation per layer).
        clip_grad_norm: gradient-norm clipping (None: off).
        normalise: scale each layer's inputs and outputs to E‖·‖ = √d_model for training
            (folded back into the weights when saving).
        init_decoder_bias: start b_dec at the mean MLP output of the first batch.
        autocast: "bf16" runs the forward pass under bfloat16 autocast (weights and optimizer
            states stay float32); "off" runs in the parameters' dtype.
        seed: seed of the transcoder's initialisation.
        log_every: steps between metric records.
        eval_every: steps between spliced evaluations on held-out tokens (None: off).
        checkpoint_every: steps between checkpoints (None: only at the end); a multiple of
            `log_every`, so that resumed metric records line up.
        keep_checkpoints: how many recent checkpoints to keep.
    """

    steps: int = 2000
    batch_size: int = 1024
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 50
    decay_start: float = 0.8
    sparsity_coefficient: float = 1e-2
    sparsity_warmup: float = 0.5
    decoder_norm_weighting: bool = True
    tanh_c: float = 1.0
    preact_coefficient: float = 1e-4
    jumprelu_bandwidth: float = 0.01
    jumprelu_threshold_init: float = 0.05
    aux_coefficient: float = 1 / 32
    aux_k: int | None = None
    firing_decay: float = 0.98
    dead_threshold: float = 1e-4
    batchtopk_threshold_decay: float = 0.99
    clip_grad_norm: float | None = 1.0
    normalise: bool = True
    init_decoder_bias: bool = True
    autocast: Autocast = "off"
    seed: int = 0
    log_every: int = 50
    eval_every: int | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "keep_checkpoints"):
            _positive_int(name, getattr(self, name))
        for name in ("eval_every", "checkpoint_every", "aux_k"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("lr", "tanh_c", "jumprelu_bandwidth"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("sparsity_coefficient", "preact_coefficient", "aux_coefficient",
                     "jumprelu_threshold_init", "dead_threshold", "warmup_steps"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("decay_start", "sparsity_warmup", "firing_decay", "batchtopk_threshold_decay"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(
                    f"TrainConfig.{name} must lie in [0, 1], got {getattr(self, name)!r}"
                )
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ConfigError(f"clip_grad_norm must be > 0 or None, got {self.clip_grad_norm!r}")
        _check_choice("autocast", self.autocast, Autocast)
        if self.checkpoint_every is not None and self.checkpoint_every % self.log_every:
            raise ConfigError(
                f"checkpoint_every={self.checkpoint_every} must be a multiple of log_every="
                f"{self.log_every}, so that a resumed run logs the same records"
            )

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a train config must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        if isinstance(data.get("betas"), list):  # JSON has no tuples
            data["betas"] = tuple(data["betas"])
        return _construct(cls, data, "train config")

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier at `step`: linear warm-up, constant, then linear decay."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        begin = self.decay_start * self.steps
        if step < begin or self.decay_start >= 1:
            return warm
        return warm * max(0.0, (self.steps - step) / max(self.steps - begin, 1.0))

    def sparsity_at(self, step: int) -> float:
        """λ at `step`: ramps up linearly from 0 over the first `sparsity_warmup` of training."""
        ramp = self.sparsity_warmup * self.steps
        return self.sparsity_coefficient * (min(1.0, step / ramp) if ramp > 0 else 1.0)


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
