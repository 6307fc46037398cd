"""Atomic checkpoints of a training run, and resuming from them.

A checkpoint is a directory `step_{n:08d}/` holding the transcoder (`model.safetensors`, its
buffers included), the optimizer's tensors (`optimizer.safetensors`), the trainer's tensors and
RNG states (`trainer.safetensors`) and everything else as JSON (`trainer.json`: step = data
position, optimizer hyper-parameters, scheduler state, configs). Nothing is pickled. It is
written into a temporary directory, synced, renamed into place and only then named in the
`latest` file, so a process killed at any moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from tl_clt._files import atomic_write_text
from tl_clt.errors import CheckpointError
from tl_clt.training.callbacks import Callback, StepOutput

if TYPE_CHECKING:
    from tl_clt.training.trainer import Trainer

FORMAT = "tl_clt.checkpoint/1"
LATEST = "latest"
_PREFIX = "step_"


def save_checkpoint(trainer: Trainer, directory: str | Path, keep: int = 2) -> Path:
    """Write the trainer's state as `directory/step_{n}` and point `latest` at it; keep only
    the `keep` most recent checkpoints."""
    directory = Path(directory)
    final = directory / f"{_PREFIX}{trainer.step:08d}"
    tmp = directory / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors, meta = _optimizer_state(trainer.optimizer)
    own = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        own.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    if trainer.firing_ema is not None:
        own["firing_ema"] = trainer.firing_ema
    _save(tmp / "model.safetensors", dict(trainer.clt.state_dict()))
    _save(tmp / "optimizer.safetensors", tensors)
    _save(tmp / "trainer.safetensors", own)
    info = {
        "format": FORMAT, "step": trainer.step, "optimizer": meta,
        "scheduler": _scheduler_state(trainer.scheduler), "train_config": trainer.config.to_dict(),
        "clt_config": trainer.clt.cfg.to_dict(),
    }  # fmt: skip
    _write_synced(tmp / "trainer.json", json.dumps(info, indent=1))
    if final.exists():  # the same step saved before (a resumed run): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(directory)
    atomic_write_text(directory / LATEST, final.name + "\n")
    for old in sorted(_complete(directory))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint `latest` names, or else the newest complete one; None if there is none."""
    directory = Path(directory)
    pointer = directory / LATEST
    if pointer.is_file():
        named = directory / pointer.read_text().strip()
        if (named / "trainer.json").is_file():
            return named
    found = sorted(_complete(directory))
    return found[-1] if found else None


def load_checkpoint(trainer: Trainer, path: str | Path) -> None:
    """Restore weights, optimizer, scheduler, RNG states and data position into `trainer`."""
    path = Path(path)
    try:
        info = json.loads((path / "trainer.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint: {exc}") from exc
    if info.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {info.get('format')!r}, expected {FORMAT!r}")
    if info["clt_config"] != trainer.clt.cfg.to_dict():
        raise CheckpointError(
            f"{path} holds a transcoder with another config; resume with the same config or "
            "start a new run directory"
        )
    model, opt, own = (_load(path / f"{n}.safetensors") for n in ("model", "optimizer", "trainer"))
    trainer.clt.load_state_dict({k: v.to(trainer.clt.device) for k, v in model.items()})
    trainer.optimizer.load_state_dict(_optimizer_state_dict(opt, info["optimizer"]))
    sched = info["scheduler"]
    trainer.scheduler.load_state_dict({**sched, "lr_lambdas": [None] * len(sched["base_lrs"])})
    torch.set_rng_state(own["rng.cpu"])
    cuda = [own[k] for k in sorted(own) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    ema = own.get("firing_ema")
    trainer.firing_ema = None if ema is None else ema.to(trainer.clt.device)
    trainer.step = int(info["step"])
    trainer.resumed = True


def resume_latest(trainer: Trainer, directory: str | Path) -> bool:
    """Load the latest checkpoint in `directory` if there is one; True if it did."""
    path = latest_checkpoint(directory)
    if path is None:
        return False
    load_checkpoint(trainer, path)
    return True


def attach_checkpoints(trainer: Trainer, directory: str | Path) -> bool:
    """Checkpoint `trainer` into `directory` (every `checkpoint_every` steps and at the end)
    and resume it from the latest checkpoint there, if any; True if it resumed."""
    directory = Path(directory)
    trainer.callbacks.append(Checkpointer(directory, trainer.config.checkpoint_every))
    trainer.checkpoint_dir = directory
    return resume_latest(trainer, directory)


class Checkpointer(Callback):
    """Callback: a checkpoint every `every` steps (main process only) and one at the end."""

    def __init__(self, directory: str | Path, every: int | None) -> None:
        self.directory, self.every = Path(directory), every

    def on_step_end(self, trainer: Trainer, out: StepOutput) -> None:
        if self.every and trainer.step % self.every == 0:
            self._save(trainer)

    def on_fit_end(self, trainer: Trainer) -> None:
        if not (self.every and trainer.step % self.every == 0):
            self._save(trainer)

    def _save(self, trainer: Trainer) -> None:
        if trainer.dist.is_main:
            save_checkpoint(trainer, self.directory, trainer.config.keep_checkpoints)
        trainer.dist.barrier()


# ---------------------------------------------------------------------- helpers
def _optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    state = optimizer.state_dict()
    tensors, plain = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"state/{idx}/{key}"] = value
            else:
                plain[f"{idx}/{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def _scheduler_state(scheduler) -> dict:
    """The scheduler's counters (its lr function comes from the TrainConfig, not the file)."""
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}


def _optimizer_state_dict(tensors: dict[str, Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, idx, key = name.split("/", 2)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta["plain"].items():
        idx, key = name.split("/", 1)
        state.setdefault(int(idx), {})[key] = value
    groups = [
        {**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _save(path: Path, tensors: dict[str, Tensor]) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _load(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{path} cannot be read ({exc}); resume from an older checkpoint"
        ) from exc


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _complete(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return [p for p in directory.glob(f"{_PREFIX}*") if (p / "trainer.json").is_file()]
