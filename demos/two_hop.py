"""Multi-step reasoning: "the capital of the state containing dallas is" -> austin, through an
intermediate state the prompt never writes.

1. Describe each state by its features at the last token ("is") over the two-hop prompts of the
   state's *training* cities: their mean activations, and the features that fire there and not
   for other states' cities (the state-selective ones).
2. Show the intermediate step in the attribution graph of the Dallas prompt: the Texas features
   are nodes of its pruned graph and carry a share of the answer's influence.
3. On every held-out city: move its features from its state to another state (the 256 features
   whose state means differ most, `_kit.shift`), and separately swap only the 32 most
   state-selective features; the answer should become the other state's capital (Dallas +
   Colorado -> denver).

    python demos/two_hop.py [--quick] [--no-labels]
"""

from __future__ import annotations

import sys
from pathlib import Path

import _kit
from _kit import OUT, Check, Row, Verdict

import tl_clt.toy as toy
from tl_clt import intervene

K = 32  # state-selective features per state (at most)
FRAME = "the capital of the state containing"


def run(quick: bool = False, out: Path = OUT, labels: bool = True) -> Verdict:
    rm = _kit.replacement()
    train = toy.load_items("two_hop", held_out=False)
    capitals = {it.state: it.capital for it in train}
    states = sorted(capitals)
    prompts = {s: [it.prompt for it in train if it.state == s] for s in states}
    acts = _kit.class_activations(rm, prompts, (-1,))
    found, means = _kit.class_features(acts, K), _kit.class_means(acts)
    held = _kit.sample(toy.load_items("two_hop"), 10 if quick else None)
    verdict = Verdict("multi-step reasoning: city -> state -> capital")

    patch = Check("state swapped (by the states' mean difference) -> that "
                  "state's capital", target=0.9)  # fmt: skip
    few = Check(f"the {K} most state-selective features swapped -> that state's capital")
    for it in held:
        dst = states[(states.index(it.state) + 7) % len(states)]
        res = intervene(rm, it.prompt, _kit.shift(rm, it.prompt, means, it.state, dst),
                             mode=_kit.MODE)  # fmt: skip
        patch.rows.append(Row(it.prompt.replace(FRAME, "…"), f"{it.state} -> {dst}",
                              res.answer_before, res.answer_after, capitals[dst],
                              res.answer_after == capitals[dst]))  # fmt: skip
        ivs = _kit.swap_at(found, it.state, dst, suppress=0.0, gain=2.0)
        res = intervene(rm, it.prompt, ivs, mode=_kit.MODE)
        few.rows.append(Row(it.prompt.replace(FRAME, "…"), f"-{it.state} +{dst}",
                            res.answer_before, res.answer_after, capitals[dst],
                            res.answer_after == capitals[dst]))  # fmt: skip
    verdict.checks += [patch, few]

    dallas = next(it for it in toy.load_items("two_hop") if it.city == "dallas")
    share, rank, n = _kit.graph_share(rm, dallas.prompt, _kit.features_of(found, dallas.state))
    shown = Check(f"the {dallas.state} features are nodes of the pruned graph of {dallas.city}")
    shown.rows.append(Row(dallas.prompt.replace(FRAME, "…"), "(attribution graph)",
                          dallas.capital, f"{n} nodes", "at least 1", n >= 1))  # fmt: skip
    verdict.checks.append(shown)
    verdict.notes.append(
        f"{dallas.state} features hold {share:.0%} of the feature nodes' influence on the answer "
        f"in the pruned graph of '{dallas.prompt}'; the strongest ranks #{rank} among its features"
    )
    verdict.page = _kit.graph_page(rm, dallas.prompt, out, "two_hop", labels,
                                   f"two-hop: {dallas.prompt} -> {dallas.capital}")  # fmt: skip
    return verdict


if __name__ == "__main__":
    sys.exit(_kit.main(run, __doc__))
