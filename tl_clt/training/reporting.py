"""Where training records go: a tqdm progress bar, a JSON-lines log, a PNG of the training
curves at the end, and Weights & Biases when it is installed and asked for."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tl_clt._files import atomic_write, atomic_write_text
from tl_clt.errors import ConfigError
from tl_clt.training.callbacks import Callback, StepOutput

if TYPE_CHECKING:
    from tl_clt.training.trainer import Trainer


class ProgressBar(Callback):
    """A tqdm bar over the steps, showing the latest loss, NMSE, L0 and dead fraction."""

    KEYS = {"loss/total": "loss", "nmse": "nmse", "l0": "L0", "dead_fraction": "dead",
            "spliced/top1": "top1", "spliced/kl": "KL"}  # fmt: skip

    def __init__(self, **tqdm_kwargs: Any) -> None:
        self.kwargs, self.bar, self.shown = tqdm_kwargs, None, {}

    def on_fit_start(self, trainer: Trainer) -> None:
        from tqdm.auto import tqdm

        if trainer.dist.is_main:
            kw = {"desc": "training", "unit": "step", **self.kwargs}
            self.bar = tqdm(total=trainer.config.steps, initial=trainer.step, **kw)

    def on_step_end(self, trainer: Trainer, out: StepOutput) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.bar is None:
            return
        for key, short in self.KEYS.items():
            if key in record:
                self.shown[short] = f"{record[key]:.3g}"
        self.bar.set_postfix(self.shown, refresh=False)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class JsonlLog(Callback):
    """One JSON object per record, appended and flushed as it comes. On resume, records after
    the resumed step are dropped first (they belong to the interrupted attempt)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.dist.is_main:
            return
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= trainer.step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines log (a torn last line, from a killed process, is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class CurvesPlot(Callback):
    """At the end, a PNG of the training curves (from the JSON-lines log when given, so that a
    resumed run plots its whole history)."""

    PANELS = (
        ("loss", ("loss/total", "loss/mse")),
        ("NMSE (mean over layers)", ("nmse",)),
        ("L0 (all layers)", ("l0",)),
        ("dead fraction", ("dead_fraction",)),
        ("spliced top-1 agreement / CE recovered", ("spliced/top1", "spliced/ce_recovered")),
        ("spliced KL (nats)", ("spliced/kl",)),
    )

    def __init__(self, path: str | Path, log: str | Path | None = None) -> None:
        self.path, self.log = Path(path), None if log is None else Path(log)

    def on_fit_end(self, trainer: Trainer) -> None:
        if trainer.dist.is_main:
            records = read_jsonl(self.log) if self.log is not None else trainer.history
            plot_curves(records, self.path)


def plot_curves(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Draw the training curves of `records` into a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (title, keys) in zip(axes.flat, CurvesPlot.PANELS):
        for key in keys:
            pts = [(r["step"], r[key]) for r in records if _finite(r.get(key))]
            if pts:
                ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None, label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        if title.startswith(("loss", "NMSE")) and any(ax.get_lines()):
            ax.set_yscale("log")
        if len(keys) > 1 and ax.get_lines():
            ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return Path(path)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class WandbLog(Callback):
    """Send records to Weights & Biases (only when asked; wandb must be installed)."""

    def __init__(
        self, project: str, name: str | None = None, config: dict[str, Any] | None = None
    ) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise ConfigError("wandb logging was asked for but wandb is not installed") from exc
        self.wandb, self.project, self.name, self.config, self.run = (
            wandb,
            project,
            name,
            config,
            None,
        )

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.dist.is_main and self.run is None:
            self.run = self.wandb.init(project=self.project, name=self.name, config=self.config)

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.run is not None:
            flat = {k: v for k, v in record.items() if _finite(v)}
            self.run.log(flat, step=record["step"])

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
