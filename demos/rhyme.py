"""Planning: at the end of a couplet's first line ("she saw a cat /") the model already holds the
rhyme it will end the second line with ("... as a hat"), before writing a word of that line.

1. Find each rhyme class's features at the line break: features that fire on first lines ending
   in a word of the class and not on the other classes' (training first lines).
2. On every held-out first line: move the line break's features from its class to another's
   (`_kit.shift`), and separately swap only the 6 most class-selective features; the model
   should then write a second line ending in the other class.
3. Where does the plan live? Write the second line's lead word (which names its rhyme word,
   "tall" -> hat) into the prompt and intervene at the break again: if the final word still
   follows the injected plan, the plan is held at the break; if it follows the written lead
   word, the model reads the rhyme off the lead word once it is written.

    python demos/rhyme.py [--quick] [--no-labels]
"""

from __future__ import annotations

import sys
from pathlib import Path

import _kit
from _kit import OUT, Check, Row, Verdict

import tl_clt.toy as toy
from tl_clt import generate, intervene

K = 6


def _at(iv, position: int):
    """The same intervention at an absolute position (the break, counted with BOS)."""
    return type(iv)(iv.layer, iv.feature, position, scale=iv.scale, value=iv.value)


def run(quick: bool = False, out: Path = OUT, labels: bool = True) -> Verdict:
    rm = _kit.replacement()
    train = toy.load_items("rhyme", held_out=False)
    classes = sorted({it.rhyme_class for it in train})
    words = {c: {w for it in train if it.rhyme_class == c for w in (it.word, *it.accept)}
             for c in classes}  # fmt: skip
    prompts = {c: [it.prompt for it in train if it.rhyme_class == c] for c in classes}
    acts = _kit.class_activations(rm, prompts, (-1,))
    found, means = _kit.class_features(acts, K), _kit.class_means(acts)
    held = _kit.sample(toy.load_items("rhyme"), 16 if quick else 96)
    verdict = Verdict("planning: the rhyme is chosen at the line break")

    plan = Check("at the break, rhyme class swapped -> the line ends in the "
                 "new class", target=None)  # fmt: skip
    few = Check(f"at the break, the {K} most class-selective features swapped -> new class")
    lead = Check("lead word written, class swapped at the break -> final word follows the swap")
    for it in held:
        dst = classes[(classes.index(it.rhyme_class) + 5) % len(classes)]
        shifted = _kit.shift(rm, it.prompt, means, it.rhyme_class, dst)
        for check, ivs in (
            (plan, shifted),
            (few, _kit.swap_at(found, it.rhyme_class, dst, suppress=0.0, gain=2.0)),
        ):
            gen = generate(rm, it.prompt, ivs, max_new_tokens=it.n_generate + 1)
            check.rows.append(Row(it.prompt, f"{it.rhyme_class} -> {dst}", " ".join(gen.before),
                                  " ".join(gen.after), f"… a <{dst}>",
                                  gen.after[-1] in words[dst]))  # fmt: skip
        written = f"{it.prompt} {it.line2.split()[0]} as a"
        res = intervene(rm, written, [_at(iv, len(it.prompt.split())) for iv in shifted],
                             mode=_kit.MODE)  # fmt: skip
        lead.rows.append(Row(written, f"{it.rhyme_class} -> {dst} at /", res.answer_before,
                             res.answer_after, f"<{dst}>", res.answer_after in words[dst]))  # fmt: skip
    verdict.checks += [plan, few, lead]
    verdict.notes.append(
        f"with the lead word already written, the injected plan decides the final word in "
        f"{lead.rate:.0%} of lines: "
        + ("the plan held at the line break carries the rhyme to the end of the line"
           if lead.rate >= 0.5 else
           "once written, the lead word decides the rhyme: the plan is made at the break, but "
           "the line's end reads it off the lead word, not off features held at the break")
    )  # fmt: skip
    example = held[0]
    verdict.page = _kit.graph_page(rm, example.prompt, out, "rhyme", labels,
                                   f"planning: {example.prompt}")  # fmt: skip
    return verdict


if __name__ == "__main__":
    sys.exit(_kit.main(run, __doc__))
