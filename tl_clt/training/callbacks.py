"""What the training loop reports, and the hooks that receive it: `StepOutput` after every
optimizer step, and `Callback`, whose methods `Trainer.fit` calls at the start, after each
step, on each metrics record and at the end. Metrics, logs, progress bars, evaluation and
checkpoints are all callbacks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from tl_clt.training.stats import BatchStats

if TYPE_CHECKING:
    from tl_clt.training.trainer import Trainer


class StepOutput(NamedTuple):
    """What one optimizer step reports to the callbacks (losses averaged over processes)."""

    step: int  # steps done, this one included
    loss: dict[str, float]
    lr: float
    sparsity: float
    grad_norm: float
    stats: BatchStats


class Callback:
    """Hooks into `Trainer.fit`; override what you need."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, out: StepOutput) -> None: ...

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...
