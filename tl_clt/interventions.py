"""Feature interventions: turn features up (scale > 1), down (scale < 0), off (scale 0) or clamp
them to a value, and see what changes downstream.

Every intervention is a configuration of the splice (`tl_clt.splice`): its features are
edited on their way to the decoder, so its hooks (`intervention_hooks(...)`) can go into a
user's own `run_with_hooks` call, and the transcoder's hook points fire as in any spliced run.
Modes:

- "constrained": the local replacement model of the clean run (the constrained patching of
  Ameisen et al. 2025, "Circuit Tracing"): attention
  patterns, normalisation scales and error terms are frozen at their clean values; each MLP
  output is the transcoder's reconstruction from the (possibly changed) features plus the frozen
  error. Later features respond to the change through these frozen linear paths. With
  `freeze_features=True` every other feature is held at its clean value too, so the measured
  change is the direct effect an attribution-graph edge describes.
- "unconstrained": the original model runs as usual (attention, norms and real MLPs all
  respond); each layer's MLP output is the reconstruction from the intervened features plus
  the live error (the MLP output minus the reconstruction from the unedited features), so it
  changes by `(a_new - a) @ W_dec`.

`error=False` runs the pure replacement model instead (no error terms).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from tl_clt.errors import InputError, TLCLTWarning
from tl_clt.replacement import ReplacementModel, check_call
from tl_clt.splice import CleanRun, Edit, Splice, SpliceRun
from tl_clt.tokenization import visible

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
        for name in ("scale", "value"):
            given = getattr(self, name)
            if given is None:
                continue
            try:
                number = float(given)
            except (TypeError, ValueError):
                number = None
            if number is None or isinstance(given, bool):
                raise InputError(
                    f"the {name} of an intervention on {self.layer}:{self.feature} must be a "
                    f"number, got {given!r}"
                )
            if not math.isfinite(number):
                raise InputError(
                    f"the {name} of an intervention on {self.layer}:{self.feature} must be a "
                    f"finite number, got {given!r}"
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


def _editor(interventions: Sequence[Intervention], n_prompt: int) -> Edit | None:
    """The splice's `edit` policy carrying out `interventions` (None when there are none)."""
    by_layer: dict[int, list[Intervention]] = {}
    for iv in interventions:
        by_layer.setdefault(iv.layer, []).append(iv)
    if not by_layer:
        return None

    def edit(layer: int, acts: Tensor) -> Tensor:
        mine = by_layer.get(layer)
        if not mine:
            return acts
        acts = acts.clone()
        for iv in mine:
            iv.apply(acts, iv.positions(n_prompt, acts.shape[1]))
        return acts

    return edit


def intervention_splice(
    rm: ReplacementModel,
    tokens: Tensor,
    interventions: Sequence[Intervention],
    *,
    mode: Mode = "constrained",
    error: bool = True,
    freeze_features: bool = False,
    run: CleanRun | None = None,
    n_prompt: int | None = None,
) -> Splice:
    """The splice that carries out `interventions` on `tokens` (see the module docstring for
    the modes). Constrained mode, and `freeze_features`, need the clean run: given as `run` or
    recorded here. `n_prompt` (default: all of `tokens`) is where the prompt ends."""
    if mode not in ("constrained", "unconstrained"):
        raise InputError(f"mode must be 'constrained' or 'unconstrained', got {mode!r}")
    n_prompt = tokens.shape[-1] if n_prompt is None else n_prompt
    check_interventions(rm, interventions, n_prompt)
    if (mode == "constrained" or freeze_features) and run is None:
        run = rm.capture(tokens, error=error)
    edit = _editor(interventions, n_prompt)
    hold = run.features if freeze_features else None
    if mode == "constrained":
        return Splice(error=run.errors if error else "none", hold=hold, edit=edit, freeze=run)
    return Splice(error="live" if error else "none", hold=hold, edit=edit)


def intervention_hooks(
    rm: ReplacementModel,
    tokens: Tensor,
    interventions: Sequence[Intervention],
    *,
    mode: Mode = "constrained",
    error: bool = True,
    freeze_features: bool = False,
    run: CleanRun | None = None,
) -> list[tuple[str, Any]]:
    """TransformerLens hooks that carry out `interventions` on `tokens`, for a user's own
    `model.run_with_hooks(tokens, fwd_hooks=...)`. Constrained mode records a clean run first
    (or uses `run`); on a model with a final logit softcap (Gemma-2) these hooks leave the cap
    live (`intervene` holds its scale too)."""
    splice = intervention_splice(
        rm, tokens, interventions, mode=mode, error=error, freeze_features=freeze_features, run=run
    )
    return rm.splice_run(splice).hooks()


def run_interventions(
    rm: ReplacementModel,
    tokens: Tensor,
    interventions: Sequence[Intervention],
    **kw: Any,
) -> tuple[Tensor, SpliceRun]:
    """Logits and the `SpliceRun` (per-layer pre-activations, features before and after the
    interventions) of one pass without gradients; keywords as `intervention_splice`."""
    splice = intervention_splice(rm, tokens, interventions, **kw)
    with torch.no_grad(), rm.splice(splice) as state:
        logits = rm.model(tokens)
    return logits, state


class TokenProb(NamedTuple):
    token: str  # the token's decoded text (`Lens.vocabulary`)
    prob: float
    logit: float
    token_id: int | None = None


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

    str_tokens: list[str]  # the decoded text of each prompt token (`Lens.token_texts`)
    interventions: tuple[Intervention, ...]
    mode: Mode
    logits_before: Tensor  # [pos, d_vocab]
    logits_after: Tensor
    features_before: list[Tensor]
    features_after: list[Tensor]
    vocab: list[str]  # the decoded text of every token id (`Lens.vocabulary`)
    text: str = ""  # the prompt's running text (`Lens.decode`)

    def top_tokens(self, after: bool = True, k: int = 5, position: int = -1) -> list[TokenProb]:
        logits = (self.logits_after if after else self.logits_before)[position].float()
        probs = logits.softmax(-1)
        top = probs.topk(k)
        return [
            TokenProb(self.vocab[i], float(p), float(logits[i]), i)
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
        prompt = visible(self.text or " ".join(self.str_tokens), spaces=False)
        lines = [f"prompt: {prompt}", f"intervention ({self.mode}): {what}",
                 f"{'before':>24}   {'after':<24}"]  # fmt: skip
        for b, a in zip(before, after):
            lines.append(
                f"{visible(b.token):>15} {b.prob:7.3f}   {visible(a.token):<15} {a.prob:7.3f}"
            )
        return "\n".join(lines)


def _describe(iv: Intervention) -> str:
    how = f"×{iv.scale:g}" if iv.scale is not None else f"={iv.value:g}"
    pos = iv.position if iv.position != "all" else "all"
    return f"{iv.layer}:{iv.feature}@{pos} {how}"


class PairedRun(NamedTuple):
    """One prompt run twice, without and with interventions, under the same splice policies."""

    tokens: Tensor  # [1, pos]
    logits_before: Tensor  # [1, pos, d_vocab]
    logits_after: Tensor
    before: SpliceRun
    after: SpliceRun


def paired_runs(
    rm: ReplacementModel,
    prompt: str | Tensor,
    interventions: Sequence[Intervention] | Intervention,
    *,
    mode: Mode = "constrained",
    error: bool = True,
    freeze_features: bool = False,
) -> PairedRun:
    """Check the arguments, record the clean run where the mode needs one, and run `prompt`
    without and with `interventions` (what `intervene` and `feature_effects` report on)."""
    if isinstance(interventions, Intervention):
        interventions = [interventions]
    tokens = rm.lens.tokens(prompt)
    check_interventions(rm, interventions, tokens.shape[-1])
    run = rm.capture(tokens, error=error) if (mode == "constrained" or freeze_features) else None
    kw = {"mode": mode, "error": error, "freeze_features": freeze_features, "run": run}
    logits_b, before = run_interventions(rm, tokens, (), **kw)
    logits_a, after = run_interventions(rm, tokens, tuple(interventions), **kw)
    return PairedRun(tokens, logits_b, logits_a, before, after)


def warn_inactive(
    interventions: Sequence[Intervention], features: Sequence[Tensor], str_tokens: Sequence[str]
) -> None:
    """One warning naming the scaling interventions whose feature is inactive at every position
    they touch in the clean run (`features`: per layer [1, pos, n_features]): scaling a zero
    changes nothing, which would otherwise look like a feature without effect."""
    n = features[0].shape[1]
    silent = []
    for iv in interventions:
        if iv.scale is None or iv.scale == 1.0:
            continue
        where = list(iv.positions(n, n))
        if where and bool((features[iv.layer][0, where, iv.feature] != 0).any()):
            continue
        at = "" if iv.position == "all" else (
            f"@{where[0]} ({visible(str_tokens[where[0]])!r})" if len(where) == 1
            else f"@{iv.position}"
        )  # fmt: skip
        silent.append(f"{iv.layer}:{iv.feature}{at}")
    if silent:
        names = ", ".join(silent[:6]) + (f" and {len(silent) - 6} more" if len(silent) > 6 else "")
        one = len(silent) == 1
        warnings.warn(
            f"{len(silent)} of the scaled features ({names}) {'is' if one else 'are'} not active "
            "where the intervention applies on this prompt, so scaling "
            f"{'it' if one else 'them'} changes nothing; set a value instead (value=...) or "
            "pick positions where they fire",
            TLCLTWarning,
            stacklevel=3,
        )


def intervene(
    rm: ReplacementModel | Any,  # checked in the body: a wrong order is an InputError
    prompt: str | Tensor | Any,
    interventions: Sequence[Intervention] | Intervention,
    *,
    mode: Mode = "constrained",
    error: bool = True,
    freeze_features: bool = False,
) -> InterventionResult:
    """Run `prompt` with and without `interventions` and report what changed (see the module
    docstring for the modes)."""
    check_call("intervene", rm, prompt)
    if isinstance(interventions, Intervention):
        interventions = [interventions]
    pair = paired_runs(
        rm, prompt, interventions, mode=mode, error=error, freeze_features=freeze_features
    )
    str_tokens = rm.lens.token_texts(pair.tokens)
    warn_inactive(interventions, pair.before.features, str_tokens)
    return InterventionResult(
        str_tokens=str_tokens,
        interventions=tuple(interventions),
        mode=mode,
        logits_before=pair.logits_before[0].detach(),
        logits_after=pair.logits_after[0].detach(),
        features_before=[a[0].detach() for a in pair.before.features],
        features_after=[a[0].detach() for a in pair.after.features],
        vocab=rm.lens.vocabulary(),
        text=rm.lens.decode(pair.tokens),
    )
