"""Scoring labels by detection on held-out contexts: does the label's rule pick out the
contexts where the feature fires from those where it does not?

Positives are held-out sequences where the feature fires, at their peaks, sampled in
proportion to the peak activation (so clear firings weigh more than the faint tail, which every
one of them still reaches); negatives are shared random held-out positions where it does not
fire. Neither was seen by the explainer. The score is the balanced accuracy (TPR + TNR) / 2: a judge that guesses, at any
rate, scores 0.5 in expectation (chance); 1.0 is perfect. A label counts as above chance when
its score exceeds 0.5 by two standard errors of a guesser's score, 0.25·√(1/n_pos + 1/n_neg).

A label with a rule (the offline summariser's) is judged by it; a free-text label (an LLM's)
by a keyword rule made from its words (`rule_from_text`); or pass your own `judge`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tqdm.auto import tqdm

from tl_clt.labels import store
from tl_clt.labels.reader import FeatureIndex
from tl_clt.labels.types import Context, DetectionScore, FeatureLabel, Rule, normalise_token

#: judge(label, contexts) -> one prediction per context: does the feature fire there?
Judge = Callable[[FeatureLabel, list[Context]], list[bool]]
CHANCE = 0.5
_GRAMMAR = re.compile(r"\(weak\)|\b(?:\d+ )?(?:on|after|before|says):")


@dataclass(frozen=True)
class ScoreSummary:
    explainer: str
    n_live: int
    n_labelled: int
    n_scored: int  # labels with held-out positives and negatives and a usable rule
    n_above_chance: int
    mean_score: float

    @property
    def fraction_above_chance(self) -> float:
        """Share of live features whose label scores above chance (unscored ones count as not)."""
        return self.n_above_chance / self.n_live if self.n_live else 0.0


def detection_score(
    pos_predictions: list[bool], neg_predictions: list[bool]
) -> DetectionScore | None:
    n_pos, n_neg = len(pos_predictions), len(neg_predictions)
    if n_pos == 0 or n_neg == 0:
        return None
    tpr = sum(pos_predictions) / n_pos
    tnr = sum(not p for p in neg_predictions) / n_neg
    score = (tpr + tnr) / 2
    se = 0.25 * math.sqrt(1 / n_pos + 1 / n_neg)
    return DetectionScore(score, CHANCE, tpr, tnr, n_pos, n_neg, score > CHANCE + 2 * se)


def rule_from_text(text: str, vocab: Iterable[str]) -> Rule | None:
    """A keyword rule for a free-text label: the label's words that are tokens of the
    vocabulary, matched at the peak or the two tokens before it."""
    words = set(re.findall(r"[^\s,;:()]+", _GRAMMAR.sub(" ", text.lower())))
    hits = frozenset(words & {normalise_token(t) for t in vocab})
    return Rule((-2, -1, 0), hits) if hits else None


def rule_judge(rule: Rule) -> Callable[[list[Context]], list[bool]]:
    return lambda contexts: [rule.matches(c) for c in contexts]


def score_labels(
    index: FeatureIndex,
    explainer: str = "offline",
    judge: Judge | None = None,
    progress: bool = True,
) -> ScoreSummary:
    """Score every stored label of `explainer` on held-out contexts and store the scores."""
    labels = list(index.labels(explainer=explainer))
    vocab = index.vocab
    for lab in tqdm(labels, desc=f"scoring ({explainer})", disable=not progress, unit="label"):
        pos, neg = index.holdout_contexts(lab.layer, lab.feature)
        if judge is not None:
            predict = lambda cs, lab=lab: judge(lab, cs)  # noqa: E731
        else:
            rule = lab.rule or rule_from_text(lab.text, vocab)
            predict = rule_judge(rule) if rule is not None else None
        score = detection_score(predict(pos), predict(neg)) if predict else None
        store.write_label(
            index.conn,
            FeatureLabel(
                lab.layer, lab.feature, lab.explainer, lab.text, lab.rule, lab.train_score, score
            ),
        )
    index.conn.commit()
    return score_summary(index, explainer)


def score_summary(index: FeatureIndex, explainer: str = "offline") -> ScoreSummary:
    """Totals of the stored scores of `explainer`'s labels."""
    n_labelled, n_scored, n_above, mean = index.conn.execute(
        "SELECT COUNT(*), COUNT(score), COALESCE(SUM(above_chance), 0), COALESCE(AVG(score), 0) "
        "FROM labels WHERE explainer=?",
        (explainer,),
    ).fetchone()
    return ScoreSummary(explainer, index.n_live(), n_labelled, n_scored, int(n_above), float(mean))
