"""Atomic checkpoints of a training run, and resuming from them.

A checkpoint is a directory `step_{n:08d}/` holding the transcoder (`model.safetensors`, its
buffers included), the optimizer's tensors (`optimizer.safetensors`), the trainer's tensors and
RNG states (`trainer.safetensors`) and everything else as JSON (`trainer.json`, written last:
step = data position, the sizes of the other files, optimizer hyper-parameters, scheduler state,
the full training and transcoder configs, the data's fingerprint). Nothing is pickled.

It is written into a temporary sibling directory, synced, swapped into place in one step and
only then named in the `latest` file; an old checkpoint is renamed out of the way before it is
deleted. So a process killed at any moment leaves every `step_*` directory whole, and `latest`
names a whole checkpoint or one that is gone. Resuming takes the checkpoint `latest` names, or,
when that one is missing or damaged, the newest whole one (with a warning). A resume whose
training config, transcoder config or data differ from the checkpoint's is refused, naming each
difference, unless `allow_changes=True` (`tl-clt train --allow-config-change`). Saves into one
directory take turns (a lock file), and the temporaries of a killed save are removed by the next.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from tl_clt._files import (
    atomic_write_text,
    clean_temporaries,
    locked,
    replace_dir,
    temporary_dir,
    write_error,
)
from tl_clt.errors import CheckpointError, TLCLTWarning
from tl_clt.training.callbacks import Callback, StepOutput

if TYPE_CHECKING:
    from tl_clt.training.trainer import Trainer

FORMAT = "tl_clt.checkpoint/1"
LATEST = "latest"
_PREFIX = "step_"


class _Refused(CheckpointError):
    """A whole checkpoint of another run: resuming from an older one would not help."""


_FILES = ("model", "optimizer", "trainer")
#: Training settings that change only what is reported or kept, not the weights: a resume may
#: change them freely.
BOOKKEEPING = ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints")


def save_checkpoint(trainer: Trainer, directory: str | Path, keep: int = 2) -> Path:
    """Write the trainer's state as `directory/step_{n}` and point `latest` at it; keep only
    the `keep` most recent checkpoints."""
    directory = Path(directory)
    final = directory / f"{_PREFIX}{trainer.step:08d}"
    with locked(directory / LATEST):
        clean_temporaries(directory, f"{_PREFIX}*")  # what saves killed before us left
        tmp = temporary_dir(final)
        try:
            _write(trainer, tmp)
            replace_dir(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError) and not isinstance(exc, CheckpointError):
                raise write_error(final, exc) from exc
            raise
        atomic_write_text(directory / LATEST, final.name + "\n")
        for old in sorted(_complete(directory))[:-keep]:
            if old != final:  # never the one just written and named latest
                _remove(old)
    trainer.last_checkpoint = final
    return final


def _write(trainer: Trainer, tmp: Path) -> None:
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
        "clt_config": trainer.clt.cfg.to_dict(), "data": trainer.data_fingerprint,
        "files": {f"{n}.safetensors": (tmp / f"{n}.safetensors").stat().st_size for n in _FILES},
    }  # fmt: skip
    _write_synced(tmp / "trainer.json", json.dumps(info, indent=1))


def _remove(path: Path) -> None:
    """Delete a checkpoint directory: renamed out of the way first, so it is never seen half
    deleted under its own name."""
    gone = path.parent / f".{path.name}.{os.getpid()}-del.tmp"
    os.replace(path, gone)
    shutil.rmtree(gone, ignore_errors=True)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint `latest` names when it is whole, or else the newest whole one (with a
    warning when `latest` names another); None if there is none."""
    found = checkpoints(directory)
    return found[0] if found else None


def checkpoints(directory: str | Path) -> list[Path]:
    """The whole checkpoints in `directory` to resume from, in order of preference: the one
    `latest` names, then the others newest first. A warning says when `latest` names a missing
    or incomplete one."""
    directory = Path(directory)
    whole = sorted(_complete(directory), reverse=True)
    pointer = directory / LATEST
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8", errors="replace").strip()
        named = directory / name
        if named in whole:
            return [named] + [p for p in whole if p != named]
        if whole:
            warnings.warn(
                f"{pointer} names {name!r}, which is missing or incomplete (a save was "
                f"interrupted); resuming from {whole[0].name}, the newest whole checkpoint",
                TLCLTWarning,
                stacklevel=3,
            )
    return whole


def load_checkpoint(trainer: Trainer, path: str | Path, *, allow_changes: bool = False) -> None:
    """Restore weights, optimizer, scheduler, RNG states and data position into `trainer`.
    A checkpoint made with another training config, transcoder config or data is refused with
    each difference named, unless `allow_changes` (then the trainer's own settings apply)."""
    path = Path(path)
    info = _read_info(path)
    if info["clt_config"] != trainer.clt.cfg.to_dict():
        diff = _differences(info["clt_config"], trainer.clt.cfg.to_dict())
        raise _Refused(
            f"{path} holds a transcoder with another config ({diff}); resume with the same "
            "config or start a new run directory"
        )
    changes = config_changes(info, trainer)
    if changes and not allow_changes:
        raise _Refused(
            f"{path} was made by a run with other settings ({'; '.join(changes)}); resume with "
            "the same settings, start a new run directory, or pass allow_changes=True "
            "(tl-clt train --allow-config-change) to go on with the new ones"
        )
    if changes:
        warnings.warn(
            f"resuming {path} with changed settings: {'; '.join(changes)}", TLCLTWarning, 2
        )
    model, opt, own = (_load(path / f"{n}.safetensors") for n in _FILES)
    trainer.clt.load_state_dict({k: v.to(trainer.clt.device) for k, v in model.items()})
    trainer.optimizer.load_state_dict(_optimizer_state_dict(opt, info["optimizer"]))
    if changes:  # the new learning rate and betas apply from here on
        for group in trainer.optimizer.param_groups:
            group["betas"] = tuple(trainer.config.betas)
    sched = info["scheduler"]
    trainer.scheduler.load_state_dict({**sched, "lr_lambdas": [None] * len(sched["base_lrs"])})
    if changes:
        trainer.scheduler.base_lrs = [trainer.config.lr] * len(trainer.scheduler.base_lrs)
    torch.set_rng_state(own["rng.cpu"])
    cuda = [own[k] for k in sorted(own) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    ema = own.get("firing_ema")
    trainer.firing_ema = None if ema is None else ema.to(trainer.clt.device)
    trainer.step = int(info["step"])
    trainer.resumed = True
    trainer.last_checkpoint = path


def config_changes(info: dict[str, Any], trainer: Trainer) -> list[str]:
    """How the trainer's settings differ from those a checkpoint was made with, one entry per
    field (bookkeeping fields such as log_every excepted)."""
    saved, now = info.get("train_config") or {}, trainer.config.to_dict()
    out = [
        f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}"
        for k in sorted(set(saved) | set(now))
        if k not in BOOKKEEPING and saved.get(k) != now.get(k)
    ]
    data, current = info.get("data"), trainer.data_fingerprint
    if data is not None and current is not None and data != current:
        out.append(f"data: checkpoint {data}, now {current} (another corpus or data settings)")
    return out


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> str:
    keys = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    return "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" for k in keys)


def _read_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint: {exc}") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        got = info.get("format") if isinstance(info, dict) else None
        raise CheckpointError(f"{path} has format {got!r}, expected {FORMAT!r}")
    return info


def resume_latest(trainer: Trainer, directory: str | Path, *, allow_changes: bool = False) -> bool:
    """Load the latest whole checkpoint in `directory` if there is one (an unreadable one is
    skipped, with a warning, for the next older); True if it did."""
    candidates = checkpoints(directory)
    for i, path in enumerate(candidates):
        try:
            load_checkpoint(trainer, path, allow_changes=allow_changes)
        except CheckpointError as exc:
            if isinstance(exc, _Refused) or i + 1 == len(candidates):
                raise
            warnings.warn(
                f"{exc}; trying the older checkpoint {candidates[i + 1].name}", TLCLTWarning, 2
            )
            continue
        return True
    return False


def attach_checkpoints(
    trainer: Trainer, directory: str | Path, *, allow_changes: bool = False
) -> bool:
    """Checkpoint `trainer` into `directory` (every `checkpoint_every` steps and at the end)
    and resume it from the latest checkpoint there, if any; True if it resumed. A checkpoint
    made with other settings is refused unless `allow_changes` (see `load_checkpoint`)."""
    directory = Path(directory)
    trainer.callbacks.append(Checkpointer(directory, trainer.config.checkpoint_every))
    trainer.checkpoint_dir = directory
    return resume_latest(trainer, directory, allow_changes=allow_changes)


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
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{path} cannot be read ({exc}); resume from an older checkpoint"
        ) from exc
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"tensor {key!r} in {path} holds NaN or infinite values; resume from an older "
                "checkpoint"
            )
    return tensors


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _complete(directory: Path) -> list[Path]:
    """The checkpoint directories whose files are all there, at the sizes `trainer.json`
    records (checkpoints older than that record: all there)."""
    if not directory.is_dir():
        return []
    return [p for p in directory.glob(f"{_PREFIX}*") if p.is_dir() and _is_whole(p)]


def _is_whole(path: Path) -> bool:
    try:
        info = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
        sizes = info.get("files") or {f"{n}.safetensors": None for n in _FILES}
        return all(
            (path / name).is_file() and (size is None or (path / name).stat().st_size == size)
            for name, size in sizes.items()
        )
    except (OSError, ValueError, AttributeError):
        return False
