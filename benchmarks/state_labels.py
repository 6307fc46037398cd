"""Do the automatic labels of the two-hop state features name their state? For each state, the
feature at the last token of "the capital of the state containing <city> is" whose mean
activation over the state's training cities most exceeds its mean over every other state
(the same selection as demos/two_hop.py), and whether its offline label names the state, its
capital or one of its cities.

The index is the demos' (`demos/out/features.db`, built if missing or made for another
transcoder), labelled with the shipped token classes as `tl-clt label` does.

    python benchmarks/state_labels.py [--out demos/out] [--k 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "demos"))

import _kit  # noqa: E402

import tl_clt.toy as toy  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=_kit.OUT, help="where the index is kept")
    p.add_argument("--k", type=int, default=1, help="a state counts if any of its k best does")
    args = p.parse_args()
    rm = _kit.replacement()
    index = _kit.feature_index(args.out)
    items = toy.load_items("two_hop", held_out=None)
    train = [it for it in items if not it.held_out]
    states = sorted({it.state for it in items})
    prompts = {s: [it.prompt for it in train if it.state == s] for s in states}
    found = _kit.class_features(_kit.class_activations(rm, prompts, (-1,)), args.k)[-1]
    named = 0
    print("| state | feature | label | detection score | names the state |\n|---|---|---|---|---|")
    for s in states:
        names = {s} | {it.capital for it in items if it.state == s}
        names |= {it.city for it in items if it.state == s}
        hit = False
        for f in found[s]:
            label = index.label(f.layer, f.feature)
            text = label.text if label else ""
            ok = any(w.strip(",;:()") in names for w in text.split())
            hit |= ok
            score = f"{label.score.score:.2f}" if label and label.score else "-"
            print(f"| {s} | {f} | {text} | {score} | {'yes' if ok else 'no'} |")
        named += hit
    print(f"\nstates whose feature's label names the state, its capital or a city: "
          f"{named}/{len(states)} = {named / len(states):.0%} (k = {args.k})")  # fmt: skip


if __name__ == "__main__":
    main()
