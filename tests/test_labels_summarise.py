"""The offline summariser on hand-built features with known answers (a state-name feature, an
intermediate-state feature firing after a state's cities, a "says" feature, a feature with no
pattern), its scores against direct counting, and a planted token feature end to end."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import get_model, random_clt

from tl_clt import ReplacementModel, build_feature_index
from tl_clt.labels import IndexConfig
from tl_clt.labels.summarise import (
    SummariserConfig,
    balanced_accuracy,
    candidates,
    set_cost,
    summarise,
)
from tl_clt.labels.types import (
    Context,
    Example,
    FeatureExamples,
    FeatureStats,
    LogitEffects,
    TokenEffect,
)

CITIES = {
    "texas": ["dallas", "houston", "austin", "el_paso"],
    "ohio": ["columbus", "cleveland", "toledo"],
    "oregon": ["portland", "salem", "eugene"],
}
CLASSES = {state: frozenset(cities) for state, cities in CITIES.items()}
FILLER = ["the", "a", "of", "is", "in", "city", "state", "capital", "containing", "which"]


def sentence(city: str) -> list[str]:
    return f"the capital of the state containing {city} is".split()


def example(words: list[str], peak: int, value: float = 1.0) -> Example:
    acts = tuple(value if i == peak else 0.0 for i in range(len(words)))
    return Example("top", 0, 0, peak, value, tuple(range(len(words))), tuple(words), acts, peak)


def features(
    positives: list[Example], negatives: list[Context], promote=(), firing=True
) -> FeatureExamples:
    stats = FeatureStats(0, 0, 1000, 50 if firing else 0, 10, 50.0, 1.0, (0,) * 82, (0.0,) * 81)
    effects = tuple(TokenEffect(t, i, z, z) for i, (t, z) in enumerate(promote))
    return FeatureExamples(
        0, 0, positives, [], negatives, stats, LogitEffects(effects, ()), dict(CLASSES)
    )


def random_negatives(n: int, seed: int = 0, words: list[str] | None = None) -> list[Context]:
    rng = random.Random(seed)
    vocab = words or FILLER + [c for cs in CITIES.values() for c in cs] + list(CITIES)
    return [Context(tuple(rng.choice(vocab) for _ in range(8)), rng.randrange(8)) for _ in range(n)]


def test_a_feature_firing_on_a_state_name_is_labelled_with_it():
    pos = [example(f"{city} is a city in texas".split(), 5) for city in CITIES["texas"] * 3]
    neg = random_negatives(200) + [
        Context(tuple(f"{c} is a city in {s}".split()), 5)
        for s in ("ohio", "oregon")
        for c in CITIES[s]
    ]
    label = summarise(features(pos, neg))
    assert label.text.startswith("on: texas")
    assert label.rule.offsets == (0,) and "texas" in label.rule.tokens


def test_an_intermediate_state_feature_names_its_state_or_its_cities():
    # fires on "is" after a Texas city (the two-hop query's intermediate state), not after others
    pos = [example(sentence(c), 7) for c in CITIES["texas"] * 4]
    neg = [
        Context(tuple(sentence(c)), 7) for s in ("ohio", "oregon") for c in CITIES[s]
    ] * 3 + random_negatives(100)
    label = summarise(features(pos, neg))
    assert label.text.startswith("after: texas (")  # the class names the state
    assert label.rule.offsets == (-1,) and label.rule.name == "texas"
    bare = features(pos, neg)
    bare.token_classes = {}
    text = summarise(bare).text.split(";")[0]  # without classes: the cities themselves
    assert text.startswith("after: ") and all(
        w in CITIES["texas"] for w in text[7:].replace(" +1", "").split(", ")
    )


def test_a_function_word_feature_gets_the_topic_it_fires_in():
    """A feature on "is" after Texas cities (and in a few other sentences) is labelled by its
    token, plus the class its contexts share ("in: texas (...)"), unless the negatives hold
    that class as often."""
    others = [c for s in ("ohio", "oregon") for c in CITIES[s]]
    pos = [example(f"we know {c} is".split(), 3) for c in CITIES["texas"] * 2]
    pos += [example(f"we know it {w} is".split(), 4) for w in ("now", "here", "so", "then")]
    filler = [w for w in FILLER if w != "is"] + others
    neg = random_negatives(300, seed=3, words=filler)
    neg += [Context(tuple(f"we know it {w} is".split()), 4) for w in ("new", "old")]
    label = summarise(features(pos, neg))
    assert label.text.startswith("on: is; in: texas (")
    assert label.rule.offsets == (0,) and label.rule.tokens == frozenset({"is"})  # scored part
    common = neg + random_negatives(300, seed=4, words=filler + CITIES["texas"] * 3)
    assert "texas" not in summarise(features(pos, common)).text  # a class as common near negatives
    # without classes: the tokens in at least half the windows, rare near the negatives (each
    # city is in only 2 of 12)
    bare = features(pos, neg)
    bare.token_classes = {}
    assert summarise(bare).text == "on: is; in: know, we"


def test_says_names_the_promoted_token_when_it_stands_out():
    pos = [example(sentence(c), 7) for c in CITIES["texas"] * 2]
    neg = random_negatives(100)
    says = summarise(features(pos, neg, promote=[("austin", 9.0), ("dallas", 2.0)])).text
    assert says.endswith("says: austin")
    quiet = summarise(features(pos, neg, promote=[("austin", 3.0), ("dallas", 2.9)])).text
    assert "says" not in quiet


def test_a_feature_without_a_pattern_gets_a_weak_label():
    words = [f"v{i}" for i in range(60)]
    rng = random.Random(1)
    pos = [example([rng.choice(words) for _ in range(8)], rng.randrange(8)) for _ in range(40)]
    label = summarise(features(pos, random_negatives(300, seed=2, words=words)))
    assert label.text.startswith("(weak)")
    dead = summarise(features([], random_negatives(10), firing=False))
    assert dead.text == "dead"


def test_candidate_scores_equal_direct_counting():
    pos = [example(sentence(c), 7) for c in CITIES["texas"] * 2 + CITIES["ohio"]]
    neg = random_negatives(150, seed=3) + [Context(tuple(sentence(c)), 7) for c in CITIES["oregon"]]
    positives = [e.context() for e in pos]
    cands = candidates(positives, neg, CLASSES, SummariserConfig())
    assert len(cands) > 5
    for c in cands:
        assert c.score == pytest.approx(balanced_accuracy(c.rule, positives, neg))
        tpr = sum(c.rule.matches(x) for x in positives) / len(positives)
        fpr = sum(c.rule.matches(x) for x in neg) / len(neg)
        n = 1 if c.rule.name else len(c.rule.tokens)
        assert c.value == pytest.approx(tpr - 4.0 * fpr - set_cost(n, SummariserConfig()))


def test_a_planted_token_feature_is_labelled_and_scores_above_chance(tmp_path):
    lens = get_model("gpt2", n_layers=2, d_model=32)
    clt = random_clt(2, 32, n_features=8, model=lens.identity())
    tokens = torch.randint(3, lens.d_vocab, (120, 12), generator=torch.Generator().manual_seed(0))
    target = lens.tokenizer.convert_tokens_to_ids("w5")
    _, cache = lens.cache(tokens, [lens.mlp_in(0)])
    x, t = cache[lens.mlp_in(0)][:, 1:].reshape(-1, 32), tokens[:, 1:].reshape(-1)
    direction = x[t == target].mean(0) - x[t != target].mean(0)
    proj = x @ direction
    with torch.no_grad():  # feature 0:0 fires (mostly) where the token is w5
        clt.W_enc[0, :, 0] = direction
        clt.b_enc[0, 0] = -(proj[t == target].min() + proj[t != target].max()) / 2
    index = build_feature_index(
        ReplacementModel(lens, clt),
        tokens,
        tmp_path / "p.db",
        IndexConfig(k=10, n_pool=200),
        progress=False,
    )
    label = index.label(0, 0)
    assert label.text.startswith("on: w5")
    assert label.score.above_chance and label.score.score > 0.8
    assert label.score.n_pos >= 3 and label.score.n_neg > 100
