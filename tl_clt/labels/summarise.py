"""The offline summariser: a short label for a feature from its contexts and logit effects,
with no model or network: "on: dallas, houston", "after: texas (dallas, houston)",
"says: austin".

How it decides (training-split data only):
1. Positives are the contexts at each kept peak; negatives are shared random positions where
   the feature does not fire, plus the non-firing positions inside its own top windows.
2. For each offset from the peak (the token itself, the tokens before it, the next one), a
   rule "the token at offset o is in S" is worth TPR - w·FPR (false positives weigh w times
   more: a feature fires on few tokens, so its label should be specific). Both rates are sums
   over S's tokens, so the best set of n tokens is the n best tokens; n is chosen against a
   cost growing with log2(1 + n); a token class (a state's cities, numbers) costs one token.
3. The best rule over offsets, sets and classes names what the feature fires on; tokens the
   decoders promote far above the rest of the vocabulary (z >= `says_z`) name what it says.
4. The topic around it: the token class with a member anywhere in the offsets' window of the
   most positives, if that is at least `context_share` of them and `context_lift` times its
   rate among the negative positions, and the rule does not already name it ("on: is; in:
   texas (dallas, houston)": a feature on "is" after Texas cities); failing a class, the
   tokens that are each in the window of at least `topic_share` of the positives, and as
   rare near the negatives ("in: montgomery"). It describes; the score is the rule's alone.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tl_clt.labels.types import Context, FeatureExamples, Label, Rule, normalise_token

#: Bumped whenever the summariser's output changes: an index labelled by another version is
#: labelled again when it is rebuilt (`build_feature_index`).
VERSION = 3


@dataclass(frozen=True)
class SummariserConfig:
    """offsets: positions relative to the peak that rules may read (0 = the peak's token).
    fp_weight: when choosing a rule, a false positive costs this many missed positives (a
    feature fires on few tokens, so a label should be specific; the reported scores stay
    balanced accuracies). penalty: cost of a rule listing one token (n tokens cost
    penalty·log2(1 + n); a class costs as much as one token). min_score: a rule whose balanced
    accuracy on the training contexts is lower is shown as "(weak)". says_z / max_says:
    promoted tokens at least this many standard deviations above the vocabulary's mean effect,
    at most this many, make the "says" part. shown: tokens listed in the label.
    context_share / context_lift: the "in:" part's least share of positives with a member of
    the class in their window, and its least ratio to the class's rate among the negatives.
    topic_share: when no class qualifies, single tokens may, each in at least this share of
    the positives' windows (and `context_lift` times rarer near the negatives)."""

    offsets: tuple[int, ...] = (0, -1, -2, -3, 1)
    max_tokens: int = 6
    fp_weight: float = 4.0
    penalty: float = 0.02
    min_score: float = 0.7
    says_z: float = 4.0
    max_says: int = 3
    shown: int = 3
    context_share: float = 1 / 3
    context_lift: float = 4.0
    topic_share: float = 0.5


@dataclass(frozen=True)
class Candidate:
    rule: Rule
    score: float  # balanced accuracy on the training contexts
    value: float  # what the choice maximises: TPR - fp_weight * FPR - cost
    shown: tuple[str, ...]  # the rule's tokens, most frequent among positives first


def balanced_accuracy(rule: Rule, positives: list[Context], negatives: list[Context]) -> float:
    if not positives or not negatives:
        return 0.5
    tpr = sum(rule.matches(c) for c in positives) / len(positives)
    tnr = sum(not rule.matches(c) for c in negatives) / len(negatives)
    return (tpr + tnr) / 2


def window_negatives(ex: FeatureExamples) -> list[Context]:
    """Non-firing positions inside the feature's own top windows."""
    out = []
    for e in ex.top:
        words = e.context().tokens
        out += [Context(words, j) for j, a in enumerate(e.acts) if a == 0]
    return out


def _column(contexts: list[Context], offset: int) -> list[str]:
    """The tokens at `offset` from each context's centre (where there is one)."""
    out = []
    for c in contexts:
        i = c.centre + offset
        if 0 <= i < len(c.tokens) and c.tokens[i] is not None:
            out.append(c.tokens[i])
    return out


def set_cost(n: int, cfg: SummariserConfig) -> float:
    """Cost of listing n tokens: `penalty` for one, growing with log2(1 + n)."""
    return cfg.penalty * math.log2(1 + n)


def candidates(
    positives: list[Context],
    negatives: list[Context],
    classes: Mapping[str, frozenset[str]],
    cfg: SummariserConfig,
) -> list[Candidate]:
    """The best token set and every token class at each offset. At one offset a context has
    one token, so a set's TPR and FPR are sums over its tokens, and the best set of n tokens
    is the n with the largest TPR - fp_weight * FPR."""
    out = []
    for o in cfg.offsets:
        pos = Counter(_column(positives, o))
        neg = Counter(_column(negatives, o))
        tpr = {t: n / len(positives) for t, n in pos.items()}
        fpr = {t: n / len(negatives) for t, n in neg.items()}
        gain = {t: tpr[t] - cfg.fp_weight * fpr.get(t, 0.0) for t in pos}
        ranked = sorted((t for t in gain if gain[t] > 0), key=lambda t: (-gain[t], -pos[t], t))
        best, best_value, total = 0, 0.0, 0.0
        for n, t in enumerate(ranked[: cfg.max_tokens], start=1):
            total += gain[t]
            if total - set_cost(n, cfg) > best_value:
                best, best_value = n, total - set_cost(n, cfg)
        rules = [(frozenset(ranked[:best]), None, best_value)] if best else []
        for name, members in classes.items():
            if any(t in members for t in pos):
                value = sum(
                    gain.get(t, -cfg.fp_weight * fpr.get(t, 0.0)) for t in members
                ) - set_cost(1, cfg)
                rules.append((members, name, value))
        for tokens, name, value in rules:
            score = (
                0.5
                + (sum(tpr.get(t, 0.0) for t in tokens) - sum(fpr.get(t, 0.0) for t in tokens)) / 2
            )
            shown = tuple(sorted((t for t in pos if t in tokens), key=lambda t: (-pos[t], t)))
            out.append(Candidate(Rule((o,), tokens, name), score, value, shown))
    return out


def _preference(c: Candidate) -> tuple:
    # higher value first; then the peak's own token, earlier offsets, classes over sets
    o = c.rule.offsets[0]
    return (-round(c.value, 9), o != 0, o > 0, abs(o), c.rule.name is None)


_PREFIX = {0: "on", -1: "after", 1: "before"}


def rule_text(c: Candidate, shown: int) -> str:
    o = c.rule.offsets[0]
    prefix = _PREFIX.get(o, f"{-o} after" if o < 0 else f"{o} before")
    listed = ", ".join(c.shown[:shown])
    if c.rule.name is not None:
        return f"{prefix}: {c.rule.name} ({listed})"
    more = len(c.rule.tokens) - min(shown, len(c.shown))
    return f"{prefix}: {listed}" + (f" +{more}" if more > 0 else "")


def context_text(
    positives: list[Context],
    negatives: list[Context],
    classes: Mapping[str, frozenset[str]],
    rule: Rule | None,
    cfg: SummariserConfig,
) -> str | None:
    """The "in:" part (see the module docstring): the token class found in the most positive
    windows, if it is common there, rare at the negative positions, and not what the rule
    already names; failing one, `topic_tokens`. None without positives or negatives (no rate
    to compare)."""
    if not positives or not negatives:
        return None
    pos, neg = _windows(positives, cfg), _windows(negatives, cfg)

    def rate(windows: list[set[str]], members: frozenset[str]) -> float:
        return sum(not members.isdisjoint(w) for w in windows) / len(windows)

    named = set(rule.tokens) if rule is not None else set()
    best, best_share = None, 0.0
    for name, members in classes.items():
        if name == (rule.name if rule else None) or named & members:
            continue
        share = rate(pos, members)
        if (share > best_share and share >= cfg.context_share
                and share >= cfg.context_lift * rate(neg, members)):  # fmt: skip
            best, best_share = name, share
    if best is None:
        return topic_tokens(pos, neg, named, cfg)
    members = classes[best]
    seen = Counter(t for c in positives for o in cfg.offsets if (t := c.at(o)) in members)
    shown = sorted(seen, key=lambda t: (-seen[t], t))[: cfg.shown]
    return f"in: {best} ({', '.join(shown)})"


def _windows(contexts: list[Context], cfg: SummariserConfig) -> list[set[str]]:
    """The tokens at `cfg.offsets` around each context's centre."""
    return [{t for o in cfg.offsets if (t := c.at(o)) is not None} for c in contexts]


def topic_tokens(
    pos: list[set[str]], neg: list[set[str]], named: set[str], cfg: SummariserConfig
) -> str | None:
    """Without a class: the tokens (at most `shown`) that are each in the window (`_windows`)
    of at least `topic_share` of the positives and `context_lift` times rarer near the
    negatives."""
    in_pos, in_neg = Counter(t for w in pos for t in w), Counter(t for w in neg for t in w)
    found = [t for t, n in in_pos.items() if t not in named and n / len(pos) >= cfg.topic_share
             and n / len(pos) >= cfg.context_lift * in_neg[t] / len(neg)]  # fmt: skip
    if not found:
        return None
    found.sort(key=lambda t: (-in_pos[t], t))
    return "in: " + ", ".join(found[: cfg.shown])


def says_text(ex: FeatureExamples, cfg: SummariserConfig) -> str | None:
    says = [e.token for e in ex.logits.promote if e.z >= cfg.says_z][: cfg.max_says]
    return "says: " + ", ".join(normalise_token(t) for t in says) if says else None


def summarise(ex: FeatureExamples, cfg: SummariserConfig | None = None) -> Label:
    """A label for one feature (see the module docstring)."""
    cfg = cfg or SummariserConfig()
    positives = ex.positives
    negatives = ex.negatives + window_negatives(ex)
    parts, rule = [], None
    if positives and negatives:
        cands = candidates(positives, negatives, ex.token_classes, cfg)
        if cands:
            best = min(cands, key=_preference)
            rule = best.rule
            text = rule_text(best, cfg.shown)
            parts.append(text if best.score >= cfg.min_score else f"(weak) {text}")
        topic = context_text(positives, ex.negatives, ex.token_classes, rule, cfg)
        if topic:
            parts.append(topic)
    says = says_text(ex, cfg)
    if says:
        parts.append(says)
    if not parts:
        return Label("dead" if not ex.stats.live else "(unclear)", rule)
    return Label("; ".join(parts), rule)


class OfflineExplainer:
    """The summariser as an explainer (see `tl_clt.labels.explainers`)."""

    name = "offline"

    def __init__(self, config: SummariserConfig | None = None) -> None:
        self.config = config or SummariserConfig()

    def __call__(self, examples: FeatureExamples) -> Label:
        return summarise(examples, self.config)


def builtin_classes(vocab: Iterable[str]) -> dict[str, frozenset[str]]:
    """Token classes every vocabulary has: numbers and punctuation."""
    norm = {normalise_token(t) for t in vocab}
    return {
        "numbers": frozenset(t for t in norm if t.replace(".", "", 1).isdigit()),
        "punctuation": frozenset(
            t for t in norm if t and not any(ch.isalnum() for ch in t) and not t.startswith("'")
        ),
    }
