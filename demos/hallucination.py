"""Hallucination and entity recognition: "what sport does nina peldra play ?" -> golf for a known
person, "unknown" for a name the model has never seen. As in the paper, "unknown" is the default
path, and features of known entities inhibit it.

1. Known-entity and unknown-name features: features at the surname and at "?" that fire on
   questions about known people (training questions) and not on questions about people without
   facts, and the reverse.
2. The graph of a never-seen person's question: the unknown-name features carry the answer.
3. On held-out people: move a never-seen person's features (surname and "?") to those of known
   people asked the same question (`_kit.shift`) -> the model answers with an attribute of the
   asked kind (a hallucination); move a known person's to the unknown class -> "unknown". The
   same with only the 6 most selective features per position, for comparison.

    python demos/hallucination.py [--quick] [--no-labels]
"""

from __future__ import annotations

import sys
from pathlib import Path

import _kit
from _kit import OUT, Check, Row, Verdict

import tl_clt.toy as toy
from tl_clt import intervene

K = 6
POSITIONS = (-3, -1)  # the surname and "?"


def run(quick: bool = False, out: Path = OUT, labels: bool = True) -> Verdict:
    rm = _kit.replacement()
    train = toy.load_items("entity", held_out=False)
    values = {}
    for it in train:
        if it.status == "known":
            values.setdefault(it.relation, set()).add(it.answer)
    prompts = {
        "known": [it.prompt for it in train if it.status == "known"],
        "unknown": [it.prompt for it in _kit.sample(
            [it for it in train if it.status == "unknown"], 240)],
    }  # fmt: skip
    found = _kit.class_features(_kit.class_activations(rm, prompts, POSITIONS), K)
    # per relation too: a question's features say which attribute is asked for
    by_relation = {f"{status} {rel}": [it.prompt for it in train
                                        if it.status == status and it.relation == rel][:240]
                   for status in ("known", "unknown") for rel in values}  # fmt: skip
    means = _kit.class_means(_kit.class_activations(rm, by_relation, POSITIONS))
    verdict = Verdict("hallucination: known entities inhibit a default 'unknown' path")

    unknown = _kit.sample(toy.load_items("entity", group="unknown"), 12 if quick else 60)
    known = _kit.sample(toy.load_items("entity", group="known"), 12 if quick else None)
    halluc = Check("never-seen name, features moved to known -> an attribute (hallucination)",
                   target=0.9)  # fmt: skip
    halluc_few = Check(f"never-seen name, the {K} most known-selective features injected per "
                       "position -> an attribute")  # fmt: skip
    for it in unknown:
        for check, ivs in (
            (
                halluc,
                _kit.shift(rm, it.prompt, means, f"unknown {it.relation}", f"known {it.relation}"),
            ),
            (halluc_few, _kit.swap_at(found, "unknown", "known", suppress=0.0, gain=2.0)),
        ):
            res = intervene(rm, it.prompt, ivs, mode=_kit.MODE)
            check.rows.append(Row(it.prompt, "unknown -> known", res.answer_before,
                                  res.answer_after, f"a {it.relation}",
                                  res.answer_after in values[it.relation]))  # fmt: skip
    silence = Check("known person, features moved to unknown -> 'unknown'", target=0.9)
    silence_few = Check(f"known person, the {K} most known-selective features per position "
                        "turned off -> 'unknown'")  # fmt: skip
    for it in known:
        for check, ivs in (
            (
                silence,
                _kit.shift(rm, it.prompt, means, f"known {it.relation}", f"unknown {it.relation}"),
            ),
            (silence_few, _kit.swap_at(found, "known", None, suppress=0.0)),
        ):
            res = intervene(rm, it.prompt, ivs, mode=_kit.MODE)
            check.rows.append(Row(it.prompt, "known -> unknown", res.answer_before,
                                  res.answer_after, "unknown", res.answer_after == "unknown"))  # fmt: skip
    verdict.checks += [halluc, silence, halluc_few, silence_few]

    example = unknown[0]
    for cls in ("unknown", "known"):
        share, rank, n = _kit.graph_share(rm, example.prompt, _kit.features_of(found, cls))
        verdict.notes.append(f"graph of '{example.prompt}' -> unknown: {cls}-class features: "
                             f"{n} nodes, {share:.0%} of feature influence, best #{rank}")  # fmt: skip
    verdict.page = _kit.graph_page(rm, example.prompt, out, "hallucination", labels,
                                   f"entity recognition: {example.prompt}")  # fmt: skip
    return verdict


if __name__ == "__main__":
    sys.exit(_kit.main(run, __doc__))
