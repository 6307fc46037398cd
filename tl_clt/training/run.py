"""`train()`: from a model and some text to a trained transcoder directory, in one call.

It builds the `ActivationSource`, the transcoder, the callbacks (metrics, spliced evaluation on
held-out sequences, progress bar, JSON-lines log, curves PNG, optional wandb) and the `Trainer`,
resumes from `out_dir/checkpoints` if a previous attempt left one, folds the normalisation into
the weights and saves the result. Under `torchrun` every process calls it the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch

from tl_clt._files import atomic_write_text
from tl_clt.activations import ActivationSource
from tl_clt.clt import CrossLayerTranscoder
from tl_clt.config import CLTConfig
from tl_clt.errors import ConfigError
from tl_clt.lens import Lens
from tl_clt.training.callbacks import Callback
from tl_clt.training.checkpoint import attach_checkpoints
from tl_clt.training.config import DataConfig, TrainConfig
from tl_clt.training.distributed import DistEnv, init_from_env
from tl_clt.training.metrics import Ablation, SplicedEval, TrainingMetrics
from tl_clt.training.reporting import CurvesPlot, JsonlLog, ProgressBar, WandbLog
from tl_clt.training.trainer import Trainer


class TrainResult(NamedTuple):
    clt: CrossLayerTranscoder  # trained, normalisation folded into the weights
    history: list[dict[str, Any]]  # the metric records of this process's run
    directory: Path | None  # the saved transcoder (out_dir), if any


def transcoder_config(lens: Lens, config: CLTConfig | dict[str, Any] | None) -> CLTConfig:
    """A CLTConfig for `lens`: n_layers, d_model and the model identity filled in when
    missing (n_features defaults to 4 × d_model)."""
    if isinstance(config, CLTConfig):
        cfg = config
    else:
        data = dict(config or {})
        data.setdefault("n_layers", lens.n_layers)
        data.setdefault("d_model", lens.d_model)
        data.setdefault("n_features", 4 * lens.d_model)
        data.setdefault("model", lens.identity().to_dict())
        cfg = CLTConfig.from_dict(data)
    if (cfg.n_layers, cfg.d_model) != (lens.n_layers, lens.d_model):
        raise ConfigError(
            f"the transcoder config has n_layers={cfg.n_layers}, d_model={cfg.d_model} but the "
            f"model has n_layers={lens.n_layers}, d_model={lens.d_model}"
        )
    return cfg


def train(
    model: Any,
    data: Any,
    clt_config: CLTConfig | dict[str, Any] | None = None,
    config: TrainConfig | dict[str, Any] | None = None,
    *,
    out_dir: str | Path | None = None,
    seq_len: int = DataConfig.seq_len,
    buffer_tokens: int = DataConfig.buffer_tokens,
    holdout_sequences: int = DataConfig.holdout_sequences,
    cache_dir: str | Path | None = None,
    ablation: Ablation = "zero",
    callbacks: list[Callback] | None = None,
    progress: bool = True,
    wandb_project: str | None = None,
    dist: DistEnv | None = None,
    allow_config_change: bool = False,
) -> TrainResult:
    """Train a transcoder on `model`'s MLPs over `data` (texts, a `datasets` dataset, token
    tensors, or a ready `ActivationSource`). With `out_dir`, the transcoder is saved there
    (`CrossLayerTranscoder.from_pretrained(out_dir)` loads it) beside `metrics.jsonl`,
    `curves.png`, `summary.json` and `checkpoints/`. A run into an `out_dir` that holds
    checkpoints resumes from them; one made with other settings or data is refused, naming each
    difference, unless `allow_config_change`."""
    lens = model if isinstance(model, Lens) else Lens(model)
    cfg = transcoder_config(lens, clt_config)
    tcfg = (
        config
        if isinstance(config, TrainConfig)
        else TrainConfig.from_dict(dict(config or {}), activation=cfg.activation)
    )
    tcfg.loss_for(cfg.activation)  # a loss for another activation fails here, not mid-way
    dist = dist or init_from_env()
    out = None if out_dir is None else Path(out_dir)
    if isinstance(data, ActivationSource):
        source = data
    else:
        source = ActivationSource.for_transcoder(
            lens, data, cfg, seq_len=seq_len, holdout_sequences=holdout_sequences,
            buffer_tokens=max(buffer_tokens, 4 * tcfg.batch_size),
            cache_dir=None if cache_dir is None else str(cache_dir), cache_write=dist.is_main,
            seed=tcfg.seed,
        )  # fmt: skip
    clt = CrossLayerTranscoder(cfg, device=lens.device)
    clt.reset_parameters(torch.Generator(device=lens.device).manual_seed(tcfg.seed))
    cbs: list[Callback] = [TrainingMetrics(tcfg.log_every)]
    heldout = source.heldout()
    if heldout is not None:
        cbs.append(SplicedEval(lens, heldout, tcfg.eval_every, ablation=ablation))
    if progress:
        cbs.append(ProgressBar())
    if out is not None:
        cbs += [
            JsonlLog(out / "metrics.jsonl"),
            CurvesPlot(out / "curves.png", out / "metrics.jsonl"),
        ]
    if wandb_project:
        cbs.append(WandbLog(wandb_project, config={"clt": cfg.to_dict(), "train": tcfg.to_dict()}))
    trainer = Trainer(clt, tcfg, cbs + list(callbacks or []), dist=dist)
    if out is not None:  # checkpoints in out_dir/checkpoints; resume from the latest one
        trainer.data_fingerprint = source.data_fingerprint()
        attach_checkpoints(trainer, out / "checkpoints", allow_changes=allow_config_change)
    trainer.fit(source)
    clt.fold_scales()
    if out is not None and dist.is_main:
        clt.save_pretrained(out)
        atomic_write_text(out / "train_config.json", json.dumps(tcfg.to_dict(), indent=2) + "\n")
        atomic_write_text(
            out / "summary.json", json.dumps(latest_metrics(trainer.history), indent=2) + "\n"
        )
    return TrainResult(clt, trainer.history, out)


def latest_metrics(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest value of every metric in `history`."""
    latest: dict[str, Any] = {}
    for record in history:
        latest.update(record)
    return latest
