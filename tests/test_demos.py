"""The five demos of demos/ on small samples of held-out items: each runs through the public API,
writes its graph page, and reaches the verdict the full run reports (demos/README.md). The
interventions are real: every row's "after" comes from a forward pass of the shipped model with
features changed."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

DEMOS = Path(__file__).resolve().parent.parent / "demos"
pytestmark = [
    pytest.mark.slow,
    # the demos turn features off at every position by design (demos/_kit.py)
    pytest.mark.filterwarnings("ignore:.*of the scaled features"),
]


@pytest.fixture(scope="module")
def demo():
    sys.path.insert(0, str(DEMOS))
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(str(DEMOS))


def _run(demo, name, tmp_path):
    verdict = demo(name).run(quick=True, out=tmp_path, labels=False)
    assert verdict.page is not None and verdict.page.is_file()
    html = verdict.page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "tl-graph" in html
    for check in verdict.checks:
        assert check.rows, check.name
        for row in check.rows:  # the before column is the model's own answer
            assert row.before
    return verdict


def test_two_hop_state_swap_changes_the_capital(demo, tmp_path):
    v = _run(demo, "two_hop", tmp_path)
    patch = v.checks[0]
    assert patch.rate >= 0.9
    for row in patch.rows:  # before: the right capital; after: the injected state's, not it
        assert row.before != row.expected
    assert next(c for c in v.checks if "pruned graph" in c.name).rate == 1.0


def test_rhyme_plan_swap_changes_the_line_ending(demo, tmp_path):
    v = _run(demo, "rhyme", tmp_path)
    assert v.checks[0].rate >= 0.8
    # the honest negative: once the lead word is written, it decides the rhyme
    assert v.checks[2].rate <= 0.2


def test_multilingual_language_and_concept_swaps(demo, tmp_path):
    v = _run(demo, "multilingual", tmp_path)
    lang, concept = v.checks
    assert lang.rate >= 0.8 and concept.rate >= 0.8
    for row in lang.rows:  # the language changed: the expected word is not the original answer
        assert row.expected != row.before


def test_addition_ones_digit_swap_keeps_the_tens(demo, tmp_path):
    v = _run(demo, "addition", tmp_path)
    ones = v.checks[0]
    assert ones.rate >= 0.7
    for row in ones.rows:
        if row.ok:
            assert row.after[:-1] == row.before[:-1] and row.after[-1] != row.before[-1]


def test_hallucination_both_directions(demo, tmp_path):
    v = _run(demo, "hallucination", tmp_path)
    halluc, silence = v.checks[:2]
    assert halluc.rate >= 0.9 and silence.rate >= 0.9
    assert all(r.before == "unknown" for r in halluc.rows)
    assert all(r.after != "unknown" for r in halluc.rows if r.ok)
