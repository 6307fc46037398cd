"""`Trainer`: a short training loop for transcoders; metrics, logging, evaluation and
checkpoints hang on callbacks (`tl_clt.training.callbacks`). Checkpointing is one of them,
attached by `tl_clt.training.checkpoint.attach_checkpoints` (which `train()` calls).

The loop consumes a plain iterator of activation batches (`ActivationBatch` or `(x, y)`
pairs of [tokens, layers, d_model]); an `ActivationSource` (anything with
`batches(batch_size, start)`) is asked to start where a resumed run left off, any other iterable
is replayed from its beginning and fast-forwarded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tl_clt.clt import CrossLayerTranscoder
from tl_clt.errors import InputError, TrainingError
from tl_clt.training.callbacks import Callback, StepOutput
from tl_clt.training.config import TrainConfig
from tl_clt.training.distributed import DistEnv
from tl_clt.training.losses import LossParts, compute_loss
from tl_clt.training.stats import BatchStats, batch_stats, reduce_stats

__all__ = ["Callback", "StepOutput", "Trainer"]  # the callback types are re-exported here


class Trainer:
    """Trains `clt` in place with Adam, following `config`. The loop knows nothing of files:
    `attach_checkpoints(trainer, directory)` adds the checkpointing callback and resumes from
    the latest checkpoint there."""

    #: How TopK / BatchTopK reconstructions are decoded: True densely through every decoder
    #: (one bf16 matmul per source layer), False from the active features' decoder rows only
    #: (`decode_sparse`, an embedding_bag), None (default) densely on CUDA and sparsely on CPU.
    #: On an H100 at 8,192 features and k = 64 the dense matmul was the faster of the two
    #: (benchmarks/train.py, docs/training.md); on CPU, at this project's sizes, the sparse one was.
    dense_decode: bool | None = None

    def __init__(
        self,
        clt: CrossLayerTranscoder,
        config: TrainConfig,
        callbacks: Iterable[Callback] = (),
        dist: DistEnv | None = None,
    ) -> None:
        self.clt, self.config = clt, config
        #: The settings and training behaviour of the transcoder's activation's loss.
        self.loss = config.loss_for(clt.cfg.activation)
        self.dist = dist or DistEnv()
        self.callbacks = list(callbacks)
        #: Where this run's checkpoints go (set by `attach_checkpoints`), named in errors.
        self.checkpoint_dir: Path | None = None
        #: True once a checkpoint has been loaded: `fit` then skips `initialise`.
        self.resumed = False
        self.params = [p for p in clt.parameters() if p.requires_grad]
        on_gpu = bool(self.params) and all(p.is_cuda for p in self.params)
        self.optimizer = torch.optim.Adam(  # one fused kernel per step on a GPU
            self.params, lr=config.lr, betas=config.betas, fused=True if on_gpu else None
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, config.lr_factor)
        self.step = 0
        #: what the data is (e.g. `ActivationSource.data_fingerprint()`), recorded in checkpoints
        self.data_fingerprint: str | None = None
        #: the newest checkpoint written or resumed from, if any
        self.last_checkpoint: Path | None = None
        self.firing_ema: Tensor | None = None
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ loop
    def fit(self, data: Any) -> Trainer:
        """Train until `config.steps` (from `self.step`: a resumed trainer goes on from there)."""
        self.clt.train()
        self._emit("on_fit_start")
        batches = self._batches(data) if self.step < self.config.steps else iter(())
        while self.step < self.config.steps:
            batch = next(batches, None)
            if batch is None:
                raise InputError(f"the data ran out after {self.step} of {self.config.steps} steps")
            x, y = self._unpack(batch)
            if self.step == 0 and not self.resumed:
                self.initialise(x, y)
            out = self.train_step(self.dist.shard(x), self.dist.shard(y))
            self._emit("on_step_end", out)
        self._emit("on_fit_end")
        return self

    def train_step(self, x: Tensor, y: Tensor) -> StepOutput:
        """One optimizer step on this process's slice of a batch."""
        cfg, clt = self.config, self.clt
        lam = cfg.sparsity_at(self.step)
        dead = self.dead_mask() if self.loss.uses_dead_features else None
        dense = x.is_cuda if self.dense_decode is None else self.dense_decode
        with self._autocast():
            parts, fwd = compute_loss(
                clt, x, y, sparsity=lam, config=cfg, dead=dead, dense_decode=dense
            )
        self.optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        self.dist.average_gradients(self.params)
        max_norm = cfg.clip_grad_norm if cfg.clip_grad_norm is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        losses = self.dist.all_reduce_(torch.stack([p.detach().float() for p in parts]), "mean")
        self._check_finite(parts, losses, grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            self.loss.after_step(clt)
        stats = reduce_stats(batch_stats(clt, fwd, y), self.dist)
        self._update_state(stats)
        self.step += 1
        loss = dict(zip(LossParts._fields, losses.tolist()))
        return StepOutput(self.step, loss, lr, lam, float(grad_norm), stats)

    # ------------------------------------------------------------------ state
    def initialise(self, x: Tensor, y: Tensor) -> None:
        """Before the first step: per-layer normalisation and b_dec from the first (global)
        batch, a nonzero JumpReLU threshold, and every process holding the same weights."""
        clt, cfg = self.clt, self.config
        d = clt.cfg.d_model
        with torch.no_grad():
            if cfg.normalise:
                clt.input_scale.copy_(d**0.5 / x.float().norm(dim=-1).mean(0).clamp_min(1e-8))
                clt.output_scale.copy_(d**0.5 / y.float().norm(dim=-1).mean(0).clamp_min(1e-8))
            if cfg.init_decoder_bias:
                clt.b_dec.copy_(y.float().mean(0))
            self.loss.initialise(clt)
        self.dist.broadcast_module(clt)

    def _update_state(self, stats: BatchStats) -> None:
        cfg, clt = self.config, self.clt
        shared = clt.cfg.shared
        firing = stats.firing.sum(0, keepdim=True) if shared else stats.firing
        per_enc = stats.n_tokens * (clt.cfg.n_layers if shared else 1)
        rate = (firing / per_enc).float()
        if self.firing_ema is None:
            self.firing_ema = rate
        else:
            self.firing_ema.mul_(cfg.firing_decay).add_(rate, alpha=1 - cfg.firing_decay)
        self.loss.update_threshold(clt, stats.min_selected, self.step)

    def dead_mask(self) -> Tensor | None:
        """Features whose firing-rate average is below `dead_threshold` ([n_enc, F])."""
        if self.firing_ema is None:
            return None
        return self.firing_ema < self.config.dead_threshold

    # ------------------------------------------------------------------ helpers
    def log(self, record: dict[str, Any]) -> None:
        """Send a metrics record to every callback (main process only)."""
        if self.dist.is_main:
            self.history.append(record)
            self._emit("on_log", record)

    def _emit(self, event: str, *args: Any) -> None:
        for cb in list(self.callbacks):
            getattr(cb, event)(self, *args)

    def _batches(self, data: Any) -> Iterator[Any]:
        if hasattr(data, "batches"):
            return iter(data.batches(self.config.batch_size, start=self.step))
        it = iter(data)
        for _ in range(self.step):
            if next(it, None) is None:
                raise InputError(f"the data ended before the resumed position (batch {self.step})")
        return it

    def _unpack(self, batch: Any) -> tuple[Tensor, Tensor]:
        x, y = batch
        want = (self.clt.cfg.n_layers, self.clt.cfg.d_model)
        if x.dim() != 3 or tuple(x.shape[1:]) != want or x.shape != y.shape:
            raise InputError(
                f"activation batches must be pairs of [tokens, {want[0]}, {want[1]}] tensors; got "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        kw = {"device": self.clt.device, "dtype": self.clt.dtype}
        x, y = x.to(**kw), y.to(**kw)
        for name, t in (("MLP input", x), ("MLP output", y)):
            if not bool(torch.isfinite(t).all()):
                raise TrainingError(
                    f"the {name} activations of the batch for step {self.step + 1} hold NaN or "
                    "infinite values; training stopped before using them"
                    f"{self._kept_checkpoint()}. Check the model's weights and the data (e.g. "
                    "an fp16 overflow)"
                )
        return x, y

    def _autocast(self):
        if self.config.autocast == "bf16":
            return torch.autocast(self.clt.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _kept_checkpoint(self) -> str:
        if self.last_checkpoint is not None:
            return f"; the last checkpoint written before it is {self.last_checkpoint}"
        return "" if self.checkpoint_dir is None else "; no checkpoint was written before it"

    def _check_finite(self, parts: LossParts, losses: Tensor, grad_norm: Tensor) -> None:
        if bool(torch.isfinite(losses).all()) and bool(torch.isfinite(grad_norm)):
            return
        described = ", ".join(f"{k}={v:.4g}" for k, v in zip(LossParts._fields, losses.tolist()))
        where = self._kept_checkpoint()
        raise TrainingError(
            f"the loss is not finite at step {self.step + 1} ({described}, grad norm "
            f"{float(grad_norm):.4g}); training stopped before updating the weights{where}. Lower "
            "the learning rate, set clip_grad_norm, or check the activations for inf/NaN"
        )
