"""Detection scores against hand counts, keyword rules for free-text labels, and pluggable
explainers (called only when given, seeing training contexts only)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import get_model, random_clt

from tl_clt import ReplacementModel, build_feature_index
from tl_clt.errors import InputError
from tl_clt.labels import (
    IndexConfig,
    label_features,
    llm_explainer,
    load_explainer,
    score_labels,
    store,
)
from tl_clt.labels.scoring import detection_score, rule_from_text
from tl_clt.labels.types import Context, FeatureExamples, FeatureLabel, Label


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    lens = get_model("gpt2", n_layers=2, d_model=32)
    clt = random_clt(2, 32, n_features=8, model=lens.identity())
    tokens = torch.randint(3, lens.d_vocab, (60, 10), generator=torch.Generator().manual_seed(4))
    path = tmp_path_factory.mktemp("scoring") / "s.db"
    return build_feature_index(
        ReplacementModel(lens, clt),
        tokens,
        path,
        IndexConfig(k=6, n_pool=60),
        label=False,
        progress=False,
    )


def test_detection_score_is_balanced_accuracy_with_a_chance_margin():
    s = detection_score([True] * 6 + [False] * 2, [False] * 18 + [True] * 2)
    assert (s.tpr, s.tnr, s.score, s.chance) == (0.75, 0.9, pytest.approx(0.825), 0.5)
    se = 0.25 * math.sqrt(1 / 8 + 1 / 20)
    assert s.above_chance == (0.5 + 2 * se < 0.825)
    guess = detection_score([True, False] * 10, [True, False] * 50)
    assert guess.score == 0.5 and not guess.above_chance
    assert detection_score([], [True]) is None


def test_free_text_labels_become_keyword_rules():
    vocab = ["<bos>", " Austin", "says", "texas", "on"]
    rule = rule_from_text("says: Austin; on: Texas (weak)", vocab)
    assert rule.tokens == {"austin", "texas"} and rule.offsets == (-2, -1, 0)
    assert rule.matches(Context(("texas", "x", "y"), 2)) and not rule.matches(
        Context(("texas", "x", "y", "z"), 3)
    )
    assert rule_from_text("nothing here", vocab) is None


def test_a_custom_explainer_sees_training_contexts_and_is_scored(index):
    seen: list[FeatureExamples] = []

    def first_token(ex: FeatureExamples) -> str:
        seen.append(ex)
        return ex.top[0].tokens[ex.top[0].peak] if ex.top else "nothing"

    n = label_features(index, first_token, progress=False)
    assert n == index.n_live() == len(seen) and n > 0
    for ex in seen:  # no held-out sequence reaches an explainer
        assert not any(index.is_holdout(e.seq for e in ex.top + ex.samples))
        assert all(e.kind in ("top", "sample") for e in ex.top + ex.samples)
    summary = score_labels(index, "first_token", progress=False)
    labels = list(index.labels("first_token"))
    assert summary.n_labelled == len(labels) == n and summary.n_scored == sum(
        lab.score is not None for lab in labels
    )
    assert {lab.explainer for lab in index.labels()} == {"first_token"}  # nothing else was called


def test_a_custom_judge_replaces_the_rule(index):
    label_features(index, lambda ex: Label("anything"), name="const", progress=False)
    always = score_labels(
        index, "const", judge=lambda lab, contexts: [True] * len(contexts), progress=False
    )
    assert always.n_scored > 0
    for lab in index.labels("const"):
        if lab.score is not None:
            assert (lab.score.tpr, lab.score.tnr, lab.score.score) == (1.0, 0.0, 0.5)


def test_llm_explainer_sends_a_prompt_and_keeps_the_first_line(index):
    prompts = []

    def fake_client(prompt: str) -> str:
        prompts.append(prompt)
        return "  fires on w7\nmore text"

    label_features(
        index,
        llm_explainer(fake_client, name="fake"),
        features=[index.live_features()[0]],
        progress=False,
    )
    (lab,) = index.labels("fake")
    assert lab.text == "fires on w7" and lab.rule is None
    assert "[[" in prompts[0] and "Label:" in prompts[0]


def test_load_explainer_imports_a_callable():
    assert load_explainer("tl_clt.labels.summarise:OfflineExplainer").name == "offline"
    for bad in ("nomodule", "tl_clt.labels:missing", "tl_clt.labels.summarise:SummariserConfig.x"):
        with pytest.raises(InputError):
            load_explainer(bad)


def test_feature_label_round_trip(index):
    layer, feature = index.live_features()[0]
    score = detection_score([True, True], [False])
    store.write_label(index.conn, FeatureLabel(layer, feature, "rt", "a <label>", None, 0.7, score))
    assert index.label(layer, feature, "rt") == FeatureLabel(
        layer, feature, "rt", "a <label>", None, 0.7, score
    )
    assert index.search("<LABEL>", explainer="rt")[0].feature == feature
    assert index.search(f"{layer}:{feature}", explainer="rt")[0].text == "a <label>"
