"""The numbers every transcoder paper reports, as training callbacks.

- `TrainingMetrics`: over each window of `every` steps, NMSE (fraction of variance unexplained)
  per layer and its mean, L0 per layer and in total, the dead fraction (features whose
  firing-rate moving average is below `dead_threshold`), the loss parts, λ and learning rate.
- `SplicedEval`: every `every` steps, on held-out tokens, the model with the transcoder spliced
  in place of every MLP (`ReplacementModel.spliced(error=False)`): top-1 agreement with the
  original model, KL(original ‖ spliced), and CE loss recovered =
  (CE_ablated − CE_spliced) / (CE_ablated − CE_original), where the ablated baseline replaces
  every MLP output by zero ("zero", the default) or by its mean over the held-out tokens
  ("mean"). With `exact_bos`, a second set of figures keeps the true MLP output at position 0
  (the BOS position, on which the transcoder is not trained) under the `spliced_bos/` keys.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from tl_clt.activations.text import TokenBatch
from tl_clt.clt import CrossLayerTranscoder
from tl_clt.lens import Lens
from tl_clt.replacement import ReplacementModel
from tl_clt.training.stats import BatchStats, add_stats
from tl_clt.training.trainer import Callback, StepOutput, Trainer

Ablation = Literal["zero", "mean"]


def nmse_per_layer(stats: BatchStats) -> Tensor:
    """Σ‖ŷ − y‖² / Σ‖y − ȳ‖² per layer (ȳ: the mean over the tokens of `stats`)."""
    var = stats.sum_y2 - stats.sum_y.pow(2).sum(-1) / stats.n_tokens
    return stats.sq_err / var.clamp_min(1e-12)


class TrainingMetrics(Callback):
    """Logs a record every `every` steps (and for a last partial window at the end)."""

    def __init__(self, every: int) -> None:
        self.every = every
        self._reset()

    def _reset(self) -> None:
        self.stats: BatchStats | None = None
        self.loss: dict[str, float] = {}
        self.n = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        self._reset()

    def on_step_end(self, trainer: Trainer, out: StepOutput) -> None:
        self.stats = add_stats(self.stats, out.stats)
        for k, v in out.loss.items():
            self.loss[k] = self.loss.get(k, 0.0) + v
        self.n += 1
        self.last = out
        if trainer.step % self.every == 0:
            self._emit(trainer)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.n:
            self._emit(trainer)

    def _emit(self, trainer: Trainer) -> None:
        stats, out = self.stats, self.last
        nmse = nmse_per_layer(stats)
        l0 = stats.l0 / stats.n_tokens
        dead = trainer.dead_mask()
        record = {
            "step": trainer.step,
            "tokens": trainer.step * trainer.config.batch_size,
            **{f"loss/{k}": v / self.n for k, v in self.loss.items()},
            "lr": out.lr, "lambda": out.sparsity, "grad_norm": out.grad_norm,
            "nmse": float(nmse.mean()), "nmse_per_layer": nmse.tolist(),
            "l0": float(l0.sum()), "l0_per_layer": l0.tolist(),
            "dead_fraction": float(dead.float().mean()) if dead is not None else 0.0,
        }  # fmt: skip
        self._reset()
        trainer.log(record)


class SplicedMetrics(NamedTuple):
    top1: float
    kl: float
    ce_original: float
    ce_spliced: float
    ce_ablated: float
    ce_recovered: float


def spliced_metrics(
    lens: Lens,
    clt: CrossLayerTranscoder,
    tokens: TokenBatch,
    ablation: Ablation = "zero",
    exact_bos: bool = False,
    batch_size: int = 32,
) -> SplicedMetrics:
    """Top-1 agreement, KL and CE recovered of the pure replacement model on `tokens`, over
    every position whose next token is real (not padding)."""
    was_training = clt.training
    clt.eval()
    rm = ReplacementModel(lens, clt, check_identity=False)
    outs = [lens.mlp_out(layer, clt.cfg.output_hook) for layer in range(lens.n_layers)]
    sums = torch.zeros(6, dtype=torch.float64)
    try:
        with torch.no_grad():
            means = _mean_outputs(lens, tokens, outs) if ablation == "mean" else None
            for start in range(0, tokens.tokens.shape[0], batch_size):
                part = TokenBatch(*(t[start : start + batch_size] for t in tokens))
                sums += _batch_sums(lens, rm, part, outs, means, exact_bos)
    finally:
        clt.train(was_training)
    n = sums[5].clamp_min(1)
    top1, kl, ce_o, ce_s, ce_a = (sums[:5] / n).tolist()
    recovered = (ce_a - ce_s) / (ce_a - ce_o) if ce_a != ce_o else float("nan")
    return SplicedMetrics(top1, kl, ce_o, ce_s, ce_a, recovered)


def _batch_sums(lens, rm, part: TokenBatch, outs, means, exact_bos: bool) -> Tensor:
    toks = part.tokens.to(lens.device)
    target = toks[:, 1:]
    mask = part.real[:, 1:].to(lens.device)
    original = lens.run(toks)
    with rm.spliced(error=False, keep_bos=exact_bos):
        spliced = lens.run(toks)
    ablate = [(name, _ablation(None if means is None else means[i])) for i, name in enumerate(outs)]
    ablated = lens.run(toks, ablate)
    logp = [torch.log_softmax(t[:, :-1].double(), -1) for t in (original, spliced, ablated)]
    ce = [-(lp.gather(-1, target[..., None])[..., 0])[mask].sum() for lp in logp]
    top1 = (logp[0].argmax(-1) == logp[1].argmax(-1))[mask].sum()
    kl = (logp[0].exp() * (logp[0] - logp[1])).sum(-1)[mask].sum()
    return torch.stack([top1.double(), kl, *ce, mask.sum().double()]).cpu()


def _ablation(mean: Tensor | None):
    def hook(t: Tensor, hook: Any) -> Tensor:
        return torch.zeros_like(t) if mean is None else mean.to(t.dtype).expand_as(t).clone()

    return hook


def _mean_outputs(lens: Lens, tokens: TokenBatch, outs: list[str]) -> list[Tensor]:
    _, cache = lens.cache(tokens.tokens.to(lens.device), outs)
    real = tokens.real.to(lens.device)
    return [cache[name][real].double().mean(0) for name in outs]


class SplicedEval(Callback):
    """Every `every` steps (and at the end), log the spliced metrics on held-out tokens under
    `spliced/...` (and `spliced_bos/...` with `exact_bos`)."""

    def __init__(
        self, lens: Lens, tokens: TokenBatch, every: int | None,
        ablation: Ablation = "zero", exact_bos: bool = True,
    ) -> None:  # fmt: skip
        self.lens, self.tokens, self.every = lens, tokens, every
        self.ablation, self.exact_bos = ablation, exact_bos
        self.last_step = -1

    def on_step_end(self, trainer: Trainer, out: StepOutput) -> None:
        if self.every and trainer.step % self.every == 0:
            self.evaluate(trainer)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.last_step != trainer.step:
            self.evaluate(trainer)

    def evaluate(self, trainer: Trainer) -> dict[str, Any]:
        record: dict[str, Any] = {"step": trainer.step, "ablation": self.ablation}
        if trainer.dist.is_main:
            modes = [("spliced", False)] + ([("spliced_bos", True)] if self.exact_bos else [])
            for prefix, exact in modes:
                m = spliced_metrics(self.lens, trainer.clt, self.tokens, self.ablation, exact)
                record.update({f"{prefix}/{k}": v for k, v in m._asdict().items()})
            trainer.log(record)
        self.last_step = trainer.step
        return record
