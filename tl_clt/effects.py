"""Feature-to-feature effects: change a source feature (or a group) and rank the change it
causes in every later active feature's pre-activation and in the target logits.

The seed's test of a relationship: "the relationship between features can be if changing the
previous feature affects future features".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from tl_clt.interventions import Intervention, Mode, check_interventions, run_interventions
from tl_clt.replacement import ReplacementModel


class FeatureEffect(NamedTuple):
    layer: int
    position: int
    feature: int
    pre_before: float
    pre_after: float
    act_before: float
    act_after: float

    @property
    def delta_pre(self) -> float:
        return self.pre_after - self.pre_before

    @property
    def delta_act(self) -> float:
        return self.act_after - self.act_before


class LogitEffect(NamedTuple):
    token: str
    token_id: int
    before: float
    after: float

    @property
    def delta(self) -> float:
        return self.after - self.before


@dataclass
class Effects:
    """Measured effects of `sources` on later features (ranked by |Δ pre-activation|) and on
    the target logits at the last position (ranked by |Δ logit|)."""

    sources: tuple[Intervention, ...]
    mode: Mode
    freeze_features: bool
    features: list[FeatureEffect]
    logits: list[LogitEffect]

    def __str__(self) -> str:
        lines = [
            f"effects ({self.mode}{', other features frozen' if self.freeze_features else ''}):"
        ]
        for e in self.features[:10]:
            lines.append(
                f"  feature {e.layer}:{e.feature}@{e.position}  pre {e.pre_before:+.3f} -> "
                f"{e.pre_after:+.3f} (Δ {e.delta_pre:+.3f})"
            )
        for e in self.logits[:5]:
            lines.append(
                f"  logit {e.token!r}: {e.before:+.3f} -> {e.after:+.3f} (Δ {e.delta:+.3f})"
            )
        return "\n".join(lines)


def feature_effects(
    rm: ReplacementModel,
    prompt: str | torch.Tensor,
    sources: Intervention | Sequence[Intervention],
    mode: Mode = "constrained",
    freeze_features: bool = False,
    error: bool = True,
    targets: Sequence[str] | None = None,
    n_targets: int = 10,
    min_change: float = 1e-6,
) -> Effects:
    """Change `sources` and measure every later feature that is active (before or after) and
    the target logits (`targets`, or the clean run's `n_targets` most likely tokens)."""
    if isinstance(sources, Intervention):
        sources = [sources]
    sources = tuple(sources)
    tokens = rm.lens.tokens(prompt)
    check_interventions(rm, sources, tokens.shape[-1])
    run = rm.capture(tokens, error=error) if (mode == "constrained" or freeze_features) else None
    logits_b, before = run_interventions(rm, tokens, (), mode, error, freeze_features, run)
    logits_a, after = run_interventions(rm, tokens, sources, mode, error, freeze_features, run)
    first = min(s.layer for s in sources)
    touched = {(s.layer, s.feature) for s in sources}
    effects = []
    for layer in range(first, rm.n_layers):
        pb, pa = before.pre[layer][0], after.pre[layer][0]
        ab, aa = before.new[layer][0], after.new[layer][0]
        live = ((ab != 0) | (aa != 0)) & ((pa - pb).abs() > min_change)
        for p, f in zip(*[t.tolist() for t in torch.nonzero(live, as_tuple=True)]):
            if (layer, f) in touched:
                continue
            effects.append(
                FeatureEffect(
                    layer, p, f, float(pb[p, f]), float(pa[p, f]), float(ab[p, f]), float(aa[p, f])
                )
            )
    effects.sort(key=lambda e: -abs(e.delta_pre))
    vocab = rm.lens.vocabulary()
    last_b, last_a = logits_b[0, -1], logits_a[0, -1]
    if targets is None:
        ids = last_b.topk(n_targets).indices.tolist()
    else:
        ids = [int(rm.lens.to_tokens(t, prepend_bos=False)[0, 0]) for t in targets]
    logit_effects = [LogitEffect(vocab[i], i, float(last_b[i]), float(last_a[i])) for i in ids]
    logit_effects.sort(key=lambda e: -abs(e.delta))
    return Effects(sources, mode, freeze_features, effects, logit_effects)
