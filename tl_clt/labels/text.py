"""A feature's summary as plain text, for the terminal (`tl-clt feature L:F`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tl_clt.labels.types import Example

if TYPE_CHECKING:
    from tl_clt.labels.reader import FeatureIndex


def context_line(e: Example, width: int = 80) -> str:
    """One context with its peak token in [[brackets]] and the activation in front."""
    toks = [f"[[{t}]]" if i == e.peak else t for i, t in enumerate(e.tokens)]
    line = f"{e.value:8.3f}  " + " ".join(repr(t)[1:-1] for t in toks)
    return line if len(line) <= width else line[: width - 1] + "…"


def describe(
    index: FeatureIndex, layer: int, feature: int, explainer: str = "offline", n: int = 8
) -> str:
    s = index.stats(layer, feature)
    lab = index.label(layer, feature, explainer)
    out = [f"feature {layer}:{feature}  ({index.path.name}, {s.n_tokens} tokens)"]
    if lab is not None:
        out.append(f"label ({explainer}): {lab.text}")
        if lab.score is not None:
            sc = lab.score
            verdict = "above chance" if sc.above_chance else "not above chance"
            out.append(
                f"detection score: {sc.score:.3f} (chance {sc.chance:.2f}, {verdict}; TPR {sc.tpr:.2f}, "
                f"TNR {sc.tnr:.2f} on {sc.n_pos} held-out firing / {sc.n_neg} non-firing contexts)"
            )
        elif s.live:
            out.append("detection score: none (too few held-out contexts, or no rule)")
    out.append(
        f"density {s.density:.3g} ({s.n_fire} tokens, {s.n_seq_fire} sequences), "
        f"max {s.max_act:.3f}, mean when firing {s.mean_act:.3f}"
    )
    if not s.live:
        out.append("the feature never fired on this corpus")
        return "\n".join(out)
    out.append("top contexts:")
    out += ["  " + context_line(e) for e in index.examples(layer, feature, "top")[:n]]
    samples = index.examples(layer, feature, "sample")
    if samples:
        out.append("weaker contexts (by quantile, strongest first):")
        out += [
            f"  q{e.quantile} " + context_line(e) for e in samples[:: max(1, len(samples) // n)][:n]
        ]
    logits = index.logit_effects(layer, feature)
    fmt = lambda effects: ", ".join(f"{t.token!r} ({t.z:+.1f}σ)" for t in effects[:6])  # noqa: E731
    out.append(f"promotes: {fmt(logits.promote)}")
    out.append(f"suppresses: {fmt(logits.suppress)}")
    return "\n".join(out)
