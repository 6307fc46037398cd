"""The records the feature index hands out: contexts, statistics, logit effects, labels, and
`FeatureExamples` (everything an explainer sees about one feature)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

ExampleKind = Literal["top", "sample", "holdout"]
Split = Literal["train", "holdout"]


class FeatureId(NamedTuple):
    layer: int
    feature: int

    def __str__(self) -> str:
        return f"{self.layer}:{self.feature}"


@dataclass(frozen=True)
class Context:
    """A window of tokens (None outside the sequence) and the position of interest in it.
    Tokens are normalised (`normalise_token`): this is what rules read."""

    tokens: tuple[str | None, ...]
    centre: int

    def at(self, offset: int) -> str | None:
        i = self.centre + offset
        return self.tokens[i] if 0 <= i < len(self.tokens) else None


@dataclass(frozen=True)
class Example:
    """One sequence's peak activation of a feature, with the window around it. `tokens` are
    the decoded texts of `token_ids` (" Paris", never a vocabulary symbol).

    `tokens`/`acts` cover the window (positions outside the sequence dropped); `peak` is the
    peak's index in them; `quantile` ranks "sample" examples (0 = weakest) and is None for
    the others."""

    kind: ExampleKind
    rank: int
    seq: int
    pos: int
    value: float
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    acts: tuple[float, ...]
    peak: int
    quantile: int | None = None

    def context(self, centre: int | None = None) -> Context:
        """The window as rules read it, around the peak (or `centre`)."""
        tokens = tuple(normalise_token(t) for t in self.tokens)
        return Context(tokens, self.peak if centre is None else centre)


@dataclass(frozen=True)
class FeatureStats:
    layer: int
    feature: int
    n_tokens: int  # counted tokens in the pass
    n_fire: int  # tokens where the feature fired
    n_seq_fire: int  # sequences where it fired
    act_sum: float
    max_act: float
    hist: tuple[int, ...]  # counts on `hist_edges` (log10), with underflow / overflow bins
    hist_edges: tuple[float, ...]

    @property
    def density(self) -> float:
        return self.n_fire / self.n_tokens if self.n_tokens else 0.0

    @property
    def mean_act(self) -> float:
        """Mean activation where the feature fires."""
        return self.act_sum / self.n_fire if self.n_fire else 0.0

    @property
    def live(self) -> bool:
        return self.n_fire > 0


class TokenEffect(NamedTuple):
    token: str  # the token's decoded text
    token_id: int
    value: float  # direct effect on the logit, mean over the vocabulary removed
    z: float  # value in standard deviations of the feature's effects over the vocabulary


@dataclass(frozen=True)
class LogitEffects:
    promote: tuple[TokenEffect, ...]
    suppress: tuple[TokenEffect, ...]


@dataclass(frozen=True)
class Rule:
    """A detection rule: the context's token at any of `offsets` from the position of
    interest (normalised: stripped, lower case) is one of `tokens`. `name` is a token class
    the set stands for, if any."""

    offsets: tuple[int, ...]
    tokens: frozenset[str]
    name: str | None = None

    def matches(self, context: Context) -> bool:
        return any(context.at(o) in self.tokens for o in self.offsets)

    def to_json(self) -> dict:
        return {"offsets": list(self.offsets), "tokens": sorted(self.tokens), "name": self.name}

    @classmethod
    def from_json(cls, data: dict | None) -> Rule | None:
        if not data:
            return None
        return cls(tuple(data["offsets"]), frozenset(data["tokens"]), data.get("name"))


@dataclass(frozen=True)
class Label:
    """A feature's label: the text a person reads, and the rule it stands for (None for a
    free-text label; scoring then derives a rule from its words)."""

    text: str
    rule: Rule | None = None


@dataclass(frozen=True)
class DetectionScore:
    """How well a label's rule separates held-out firing contexts from non-firing ones.

    `score` is the balanced accuracy (TPR + TNR) / 2; a rule that guesses at random (with any
    rate) scores `chance` = 0.5 in expectation. `above_chance`: score > 0.5 + 2 standard
    errors of a random guesser's balanced accuracy (0.25·√(1/n_pos + 1/n_neg))."""

    score: float
    chance: float
    tpr: float
    tnr: float
    n_pos: int
    n_neg: int
    above_chance: bool


@dataclass(frozen=True)
class FeatureLabel:
    layer: int
    feature: int
    explainer: str
    text: str
    rule: Rule | None
    train_score: float | None  # on the contexts the label was made from
    score: DetectionScore | None  # on held-out contexts


@dataclass
class FeatureExamples:
    """What an explainer sees about one feature: contexts from the training split only (the
    held-out split is kept for scoring), negatives, statistics and logit effects."""

    layer: int
    feature: int
    top: list[Example]
    samples: list[Example]
    negatives: list[Context]
    stats: FeatureStats
    logits: LogitEffects
    token_classes: dict[str, frozenset[str]] = field(default_factory=dict)
    separator: str = " "  # between token texts in running text ("" for a subword vocabulary)

    @property
    def positives(self) -> list[Context]:
        return [e.context() for e in self.top + self.samples]


def normalise_token(token: str) -> str:
    """A token as labels and rules spell it: surrounding whitespace stripped, lower case
    (a whitespace-only token keeps its repr)."""
    stripped = token.strip()
    return stripped.lower() if stripped else repr(token)
