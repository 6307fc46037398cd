"""`TrainConfig`: every knob of a training run, frozen and validated; the settings of each
activation's loss are nested in it (`tl_clt.training.losses`: `ReLULoss`, `JumpReLULoss`,
`TopKLoss`, `BatchTopKLoss`; Ameisen et al. 2025, "Circuit Tracing", section "Architecture",
and its appendix on training). `DataConfig`: how `tl-clt train` turns text into activations."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from tl_clt.config import _check_choice, _construct
from tl_clt.errors import ConfigError
from tl_clt.training.losses import LOSSES, ActivationLoss, loss_from_dict

Autocast = Literal["off", "bf16"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train a transcoder.

    Attributes:
        steps: optimizer steps.
        batch_size: tokens per step, over all processes (each of P processes takes 1/P).
        lr: Adam learning rate.
        betas: Adam betas.
        warmup_steps: linear learning-rate warm-up from 0.
        decay_start: fraction of `steps` after which the learning rate decays linearly to 0.
        sparsity_coefficient: λ, the weight of the sparsity penalty (ReLU, JumpReLU; unused by
            TopK / BatchTopK).
        sparsity_warmup: fraction of `steps` over which λ ramps up linearly from 0.
        loss: the settings of the transcoder's activation's loss (`ReLULoss`, `JumpReLULoss`,
            `TopKLoss` or `BatchTopKLoss`, which must match the activation); None: its defaults.
        firing_decay: decay of the per-feature firing-rate moving average (per step).
        dead_threshold: a feature whose average firing rate is below this is dead.
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
    loss: ActivationLoss | None = None
    firing_decay: float = 0.98
    dead_threshold: float = 1e-4
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
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if not self.lr > 0:
            raise ConfigError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        for name in ("sparsity_coefficient", "dead_threshold", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("decay_start", "sparsity_warmup", "firing_decay"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(
                    f"TrainConfig.{name} must lie in [0, 1], got {getattr(self, name)!r}"
                )
        if self.loss is not None and not isinstance(self.loss, ActivationLoss):
            raise ConfigError(
                f"TrainConfig.loss must be one of {', '.join(c.__name__ for c in LOSSES.values())} "
                f"or None, got {self.loss!r}"
            )
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ConfigError(f"clip_grad_norm must be > 0 or None, got {self.clip_grad_norm!r}")
        _check_choice("autocast", self.autocast, Autocast)
        if self.checkpoint_every is not None and self.checkpoint_every % self.log_every:
            raise ConfigError(
                f"checkpoint_every={self.checkpoint_every} must be a multiple of log_every="
                f"{self.log_every}, so that a resumed run logs the same records"
            )

    def loss_for(self, activation: str) -> ActivationLoss:
        """The loss settings for a transcoder with this activation (`loss`, or the defaults)."""
        if self.loss is None:
            return LOSSES[activation]()
        if self.loss.activation != activation:
            raise ConfigError(
                f"TrainConfig.loss is a {type(self.loss).__name__}, for {self.loss.activation!r} "
                f"transcoders, but the transcoder's activation is {activation!r}; use "
                f"{LOSSES[activation].__name__} or loss=None (its defaults)"
            )
        return self.loss

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        if self.loss is not None:
            data["loss"] = {"activation": self.loss.activation, **dataclasses.asdict(self.loss)}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], activation: str | None = None) -> TrainConfig:
        """From `to_dict`'s JSON form. The flat keys of earlier versions (`tanh_c`,
        `aux_coefficient`, `jumprelu_bandwidth`, ...) are read into `loss` for `activation`
        (the transcoder's; the keys of other activations, which such a run did not use, are
        dropped); without `activation` they load only if they hold the defaults."""
        if not isinstance(data, dict):
            raise ConfigError(f"a train config must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        if isinstance(data.get("betas"), list):  # JSON has no tuples
            data["betas"] = tuple(data["betas"])
        legacy = {k: data.pop(k) for k in _LEGACY_KEYS if k in data}
        if isinstance(data.get("loss"), dict):
            data["loss"] = loss_from_dict(data["loss"], "the train config's loss")
        if legacy:
            if data.get("loss") is not None:
                raise ConfigError(
                    f"a train config has both 'loss' and the flat loss keys {sorted(legacy)}; "
                    "keep one of them"
                )
            data["loss"] = _from_legacy(legacy, activation)
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


#: Every flat loss key of earlier versions, with the loss classes that read it.
_LEGACY_KEYS = {k: [c for c in LOSSES.values() if k in c.legacy]
                for c in LOSSES.values() for k in c.legacy}  # fmt: skip


def _from_legacy(flat: dict[str, Any], activation: str | None) -> ActivationLoss | None:
    if activation is None:
        for key, value in flat.items():
            kind = _LEGACY_KEYS[key][0]
            if getattr(kind(), kind.legacy[key]) != value:
                raise ConfigError(
                    f"the train config's flat loss key {key}={value!r} (an earlier version's "
                    "form) needs the transcoder's activation to be read: pass "
                    "TrainConfig.from_dict(data, activation=...) or nest it under 'loss'"
                )
        return None
    if activation not in LOSSES:
        raise ConfigError(f"activation={activation!r} is not one of {sorted(LOSSES)}")
    kind = LOSSES[activation]
    mine = {kind.legacy[k]: v for k, v in flat.items() if k in kind.legacy}
    return _construct(kind, mine, f"the train config's {kind.__name__}")


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"TrainConfig.{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """How `train()` and `tl-clt train` turn text into activation batches.

    Attributes:
        seq_len: longest sequence (BOS included); longer texts are cut into windows.
        buffer_tokens: size of a shuffle chunk, in tokens (bounds the memory used; at least
            4 batches' worth is used).
        holdout_sequences: the first sequences of the data, set aside for the spliced
            evaluation.
        text_column: the dataset column that holds the text.
        split: the dataset split to read.
        streaming: stream the dataset instead of loading it.
    """

    seq_len: int = 128
    buffer_tokens: int = 65536
    holdout_sequences: int = 64
    text_column: str = "text"
    split: str = "train"
    streaming: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a data config must be a JSON object, got {type(data).__name__}")
        return _construct(cls, dict(data), "data config")
