"""Hallucination and entity recognition: "what sport does nina peldra play ?" -> golf for a known
person, "unknown" for a name the model has never seen. As in the paper, "unknown" is the default
path, and features of known entities inhibit it.

1. Known-entity and unknown-name features: features at the surname and at "?" that fire on
   questions about known people (training questions) and not on questions about people without
   facts, and the reverse.
2. The graph of a never-seen person's question: the unknown-name features carry the answer.
3. On held-out people: inject the known-entity features (and turn the unknown-name ones down) on a
   never-seen name -> the model answers with an attribute (a hallucination); turn the
   known-entity features down (and inject the unknown-name ones) on a known person's held-out
   question -> "unknown".

    python demos/hallucination.py [--quick] [--no-labels]
"""

from __future__ import annotations

import sys
from pathlib import Path

import _kit
from _kit import OUT, Check, Row, Verdict

import tl_clt.toy as toy

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
    found = _kit.class_features(rm, prompts, POSITIONS, K)
    verdict = Verdict("hallucination: known entities inhibit a default 'unknown' path")

    unknown = _kit.sample(toy.load_items("entity", group="unknown"), 12 if quick else 60)
    known = _kit.sample(toy.load_items("entity", group="known"), 12 if quick else None)
    halluc = Check("never-seen name + known-entity features -> an attribute (hallucination)",
                   target=0.9)  # fmt: skip
    for it in unknown:
        res = _kit.intervene(rm, it.prompt, _kit.swap_at(found, "unknown", "known"),
                             mode=_kit.MODE)  # fmt: skip
        halluc.rows.append(Row(it.prompt, "-unknown +known", res.answer_before, res.answer_after,
                               f"a {it.relation}", res.answer_after in values[it.relation]))  # fmt: skip
    silence = Check("known person - known-entity features -> 'unknown'", target=0.9)
    for it in known:
        res = _kit.intervene(rm, it.prompt, _kit.swap_at(found, "known", "unknown"),
                             mode=_kit.MODE)  # fmt: skip
        silence.rows.append(Row(it.prompt, "-known +unknown", res.answer_before,
                                res.answer_after, "unknown", res.answer_after == "unknown"))  # fmt: skip
    verdict.checks += [halluc, silence]

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
