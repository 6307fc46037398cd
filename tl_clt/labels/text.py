"""A feature's summary as plain text, for the terminal (`tl-clt feature L:F`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tl_clt.labels.types import Example
from tl_clt.tokenization import visible

if TYPE_CHECKING:
    from tl_clt.labels.reader import FeatureIndex


def marked_context(e: Example, separator: str = " ") -> str:
    """A context as running text (token texts joined by `separator`: a space for a
    word-level vocabulary, nothing for a subword one), its peak token in [[brackets]], with
    newlines and other control characters visible ("↵")."""
    toks = [visible(t, spaces=False) for t in e.tokens]
    return separator.join(f"[[{t}]]" if i == e.peak else t for i, t in enumerate(toks))


def context_line(e: Example, width: int = 80, separator: str = " ") -> str:
    """One context with its peak token in [[brackets]] and the activation in front."""
    line = f"{e.value:8.3f}  " + marked_context(e, separator)
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
    sep = index.separator
    out += [
        "  " + context_line(e, separator=sep) for e in index.examples(layer, feature, "top")[:n]
    ]
    samples = index.examples(layer, feature, "sample")
    if samples:
        out.append("weaker contexts (by quantile, strongest first):")
        out += [
            f"  q{e.quantile} " + context_line(e, separator=sep)
            for e in samples[:: max(1, len(samples) // n)][:n]
        ]
    logits = index.logit_effects(layer, feature)
    fmt = lambda effects: ", ".join(f"{visible(t.token)!r} ({t.z:+.1f}σ)" for t in effects[:6])  # noqa: E731
    out.append(f"promotes: {fmt(logits.promote)}")
    out.append(f"suppresses: {fmt(logits.suppress)}")
    return "\n".join(out)
