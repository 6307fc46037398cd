"""Feature interventions: turn features up (scale > 1), down (scale < 0), off (scale 0) or clamp
them to a value, and see what changes downstream.

Every intervention is a set of TransformerLens hooks on the model's own hook points (the MLP
input and output of each layer, plus attention patterns and normalisation scales in constrained
mode), so `intervention_hooks(...)` can go into a user's own `run_with_hooks` call. Modes:

- "constrained": the clean run's local replacement model ("Circuit Tracing" paper): attention
  patterns, normalisation scales and error terms are frozen at their clean values; each MLP
  output is the transcoder's reconstruction from the (possibly changed) features plus the frozen
  error. Later features respond to the change through these frozen linear paths. With
  `freeze_features=True` every other feature is held at its clean value too, so the measured
  change is the direct effect an attribution-graph edge describes.
- "unconstrained": the original model runs as usual (attention, norms and real MLPs all
  respond); each layer's MLP output gets the change in its reconstruction caused by the
  intervened features, `(a_new - a) @ W_dec`.

`error=False` runs the pure replacement model instead (no error terms).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from tl_clt.errors import InputError
from tl_clt.replacement import CleanRun, ReplacementModel

Mode = Literal["constrained", "unconstrained"]
Position = int | slice | Literal["all"]


@dataclass(frozen=True)
class Intervention:
    """Set feature `feature` of layer `layer` at `position` to `scale` × its activation or to
    `value`. `position` is an index into the prompt (negative counts from the prompt's end), a
    slice of the running sequence (so `slice(5, None)` also covers generated tokens), or "all"
    (every position but BOS, generated ones included)."""

    layer: int
    feature: int
    position: Position = "all"
    scale: float | None = None
    value: float | None = None

    def __post_init__(self) -> None:
        if (self.scale is None) == (self.value is None):
            raise InputError(
                f"an intervention on {self.layer}:{self.feature} needs exactly one of scale "
                f"(×2 up, ×-1 inverted, ×0 off) or value (clamp); got scale={self.scale}, "
                f"value={self.value}"
            )
        if not (isinstance(self.position, (int, slice)) or self.position == "all"):
            raise InputError(f"position must be an int, a slice or 'all', got {self.position!r}")

    @classmethod
    def parse(cls, spec: str, **kw: Any) -> Intervention:
        """From "L:F" or "L:F@P" (P a position index)."""
        try:
            where, _, pos = spec.partition("@")
            layer, feature = (int(p) for p in where.split(":"))
            position: Position = int(pos) if pos else kw.pop("position", "all")
        except ValueError as exc:
            raise InputError(
                f"cannot read feature {spec!r}; write LAYER:FEATURE or LAYER:FEATURE@POS"
            ) from exc
        return cls(layer, feature, position, **kw)

    def positions(self, n_prompt: int, n_total: int) -> range | list[int]:
        """The sequence positions this intervention touches when the sequence has `n_total`
        tokens of which the first `n_prompt` are the prompt."""
        if self.position == "all":
            return range(1, n_total)
        if isinstance(self.position, slice):
            return range(*self.position.indices(n_total))
        p = self.position + n_prompt if self.position < 0 else self.position
        if not 0 <= p < n_prompt:
            raise InputError(
                f"position {self.position} is past the prompt, which has {n_prompt} tokens "
                "(BOS included); use an index inside the prompt, a slice, or 'all'"
            )
        return [p]

    def apply(self, acts: Tensor, positions: Sequence[int]) -> None:
        """Modify `acts` [batch, pos, features] in place."""
        idx = torch.as_tensor(list(positions), dtype=torch.long, device=acts.device)
        if idx.numel() == 0:
            return
        current = acts[:, idx, self.feature]
        new = (
            current * self.scale if self.scale is not None else torch.full_like(current, self.value)
        )
        acts[:, idx, self.feature] = new


def check_interventions(
    rm: ReplacementModel, interventions: Sequence[Intervention], n_prompt: int
) -> None:
    """Raise `InputError` naming the first intervention that does not fit the transcoder or prompt."""
    cfg = rm.clt.cfg
    for iv in interventions:
        if not isinstance(iv, Intervention):
            raise InputError(f"expected Intervention objects, got {type(iv).__name__}")
        if not 0 <= iv.layer < cfg.n_layers:
            raise InputError(
                f"layer {iv.layer} is out of range: the transcoder has layers 0..{cfg.n_layers - 1}"
            )
        if not 0 <= iv.feature < cfg.n_features:
            raise InputError(
                f"feature {iv.feature} is out of range: layer {iv.layer} has features 0..{cfg.n_features - 1}"
            )
        iv.positions(n_prompt, n_prompt)  # validates integer positions


class _Run:
    """The state of one forward pass with interventions (hook functions close over it)."""

    def __init__(self, rm, interventions, mode, error, freeze_features, run, n_prompt):
        self.rm, self.clt = rm, rm.clt
        self.interventions, self.mode, self.error = interventions, mode, error
        self.freeze_features, self.run, self.n_prompt = freeze_features, run, n_prompt
        n = rm.n_layers
        self.base: list[Tensor | None] = [None] * n  # activations before this run's changes
        self.new: list[Tensor | None] = [None] * n  # activations after them
        self.pre: list[Tensor | None] = [None] * n  # pre-activations as computed in this run

    def read_input(self, x: Tensor, hook: Any, layer: int) -> None:
        pre, acts = self.clt.encode_layer_with_pre(x.to(self.clt.dtype), layer)
        if self.freeze_features:
            acts = self.run.features[layer].expand_as(acts)
        self.pre[layer], self.base[layer] = pre, acts
        mine = [iv for iv in self.interventions if iv.layer == layer]
        if mine:
            acts = acts.clone()
            for iv in mine:
                iv.apply(acts, iv.positions(self.n_prompt, acts.shape[1]))
        self.new[layer] = acts

    def write_output(self, mlp_out: Tensor, hook: Any, layer: int) -> Tensor:
        if self.mode == "unconstrained" and self.error:
            delta = None
            for s in self.clt.reads_from(layer):
                if self.new[s] is not self.base[s]:
                    d = (self.new[s] - self.base[s]) @ self.clt.W_dec_at(s, layer)
                    delta = d if delta is None else delta + d
            return mlp_out if delta is None else mlp_out + delta.to(mlp_out.dtype)
        out = self.clt.decode_layer(self.new, layer)
        if self.error:  # constrained: the clean run's error, frozen
            err = self.run.errors[layer]
            out = out + (err.expand_as(out) if err.shape != out.shape else err)
        return out.to(mlp_out.dtype)

    def hooks(self) -> list:
        lens, cfg = self.rm.lens, self.clt.cfg
        hooks = self.rm.freeze_hooks(self.run) if self.mode == "constrained" else []
        for layer in range(self.rm.n_layers):
            hooks.append(
                (lens.mlp_in(layer, cfg.input_hook), partial(self.read_input, layer=layer))
            )
            hooks.append(
                (lens.mlp_out(layer, cfg.output_hook), partial(self.write_output, layer=layer))
            )
        return hooks


def _make_run(rm, tokens, interventions, mode, error, freeze_features, run, n_prompt=None) -> _Run:
    if mode not in ("constrained", "unconstrained"):
        raise InputError(f"mode must be 'constrained' or 'unconstrained', got {mode!r}")
    n_prompt = tokens.shape[-1] if n_prompt is None else n_prompt
    check_interventions(rm, interventions, n_prompt)
    if (mode == "constrained" or freeze_features) and run is None:
        run = rm.capture(tokens, error=error)
    return _Run(rm, tuple(interventions), mode, error, freeze_features, run, n_prompt)


def intervention_hooks(
    rm: ReplacementModel,
    tokens: Tensor,
    interventions: Sequence[Intervention],
    mode: Mode = "constrained",
    error: bool = True,
    freeze_features: bool = False,
    run: CleanRun | None = None,
) -> list[tuple[str, Any]]:
    """TransformerLens hooks that carry out `interventions` on `tokens`, for a user's own
    `model.run_with_hooks(tokens, fwd_hooks=...)`. Constrained mode records a clean run first
    (or uses `run`)."""
    return _make_run(rm, tokens, interventions, mode, error, freeze_features, run).hooks()


def run_interventions(
    rm,
    tokens,
    interventions,
    mode="constrained",
    error=True,
    freeze_features=False,
    run=None,
    n_prompt=None,
):
    """Logits and the `_Run` state (per-layer pre-activations and activations) of one pass;
    `n_prompt` (default: all of `tokens`) is where the prompt ends, for generation."""
    state = _make_run(rm, tokens, interventions, mode, error, freeze_features, run, n_prompt)
    with torch.no_grad():
        logits = rm.lens.run(tokens, state.hooks())
    return logits, state


class TokenProb(NamedTuple):
    token: str
    prob: float
    logit: float


class FeatureChange(NamedTuple):
    layer: int
    position: int
    feature: int
    before: float
    after: float

    @property
    def delta(self) -> float:
        return self.after - self.before


@dataclass
class InterventionResult:
    """What an intervention did: logits and every feature's activation before and after (all
    positions; per-layer lists of [pos, features]). "Before" is the same kind of run without
    the interventions, so a no-op intervention leaves everything bitwise unchanged."""

    str_tokens: list[str]
    interventions: tuple[Intervention, ...]
    mode: Mode
    logits_before: Tensor  # [pos, d_vocab]
    logits_after: Tensor
    features_before: list[Tensor]
    features_after: list[Tensor]
    vocab: list[str]

    def top_tokens(self, after: bool = True, k: int = 5, position: int = -1) -> list[TokenProb]:
        logits = (self.logits_after if after else self.logits_before)[position].float()
        probs = logits.softmax(-1)
        top = probs.topk(k)
        return [
            TokenProb(self.vocab[i], float(p), float(logits[i]))
            for p, i in zip(top.values, top.indices.tolist())
        ]

    @property
    def answer_before(self) -> str:
        return self.top_tokens(after=False, k=1)[0].token

    @property
    def answer_after(self) -> str:
        return self.top_tokens(after=True, k=1)[0].token

    def feature_changes(self, min_change: float = 1e-6) -> list[FeatureChange]:
        """Every (layer, position, feature) whose activation changed, largest change first."""
        out = []
        for layer, (b, a) in enumerate(zip(self.features_before, self.features_after)):
            pos, feat = torch.nonzero((a - b).abs() > min_change, as_tuple=True)
            for p, f in zip(pos.tolist(), feat.tolist()):
                out.append(FeatureChange(layer, p, f, float(b[p, f]), float(a[p, f])))
        return sorted(out, key=lambda c: -abs(c.delta))

    def __str__(self) -> str:
        before, after = self.top_tokens(after=False), self.top_tokens(after=True)
        what = ", ".join(_describe(iv) for iv in self.interventions) or "none"
        lines = [f"prompt: {' '.join(self.str_tokens)}", f"intervention ({self.mode}): {what}",
                 f"{'before':>24}   {'after':<24}"]  # fmt: skip
        for b, a in zip(before, after):
            lines.append(f"{b.token:>15} {b.prob:7.3f}   {a.token:<15} {a.prob:7.3f}")
        return "\n".join(lines)


def _describe(iv: Intervention) -> str:
    how = f"×{iv.scale:g}" if iv.scale is not None else f"={iv.value:g}"
    pos = iv.position if iv.position != "all" else "all"
    return f"{iv.layer}:{iv.feature}@{pos} {how}"


def intervene(
    rm: ReplacementModel,
    prompt: str | Tensor,
    interventions: Sequence[Intervention] | Intervention,
    mode: Mode = "constrained",
    error: bool = True,
    freeze_features: bool = False,
) -> InterventionResult:
    """Run `prompt` with and without `interventions` and report what changed (see the module
    docstring for the modes)."""
    if isinstance(interventions, Intervention):
        interventions = [interventions]
    tokens = rm.lens.tokens(prompt)
    check_interventions(rm, interventions, tokens.shape[-1])
    run = rm.capture(tokens, error=error) if (mode == "constrained" or freeze_features) else None
    before_logits, before = run_interventions(rm, tokens, [], mode, error, freeze_features, run)
    after_logits, after = run_interventions(
        rm, tokens, interventions, mode, error, freeze_features, run
    )
    return InterventionResult(
        str_tokens=rm.lens.to_str_tokens(tokens),
        interventions=tuple(interventions),
        mode=mode,
        logits_before=before_logits[0].detach(),
        logits_after=after_logits[0].detach(),
        features_before=[a[0].detach() for a in before.new],
        features_after=[a[0].detach() for a in after.new],
        vocab=rm.lens.vocabulary(),
    )
