"""Multilingual circuits: "the opposite of small is" -> big, "le contraire de petit est" ->
grand, "das gegenteil von klein ist" -> gross. Concept features shared by the three languages
carry the meaning; language features pick the output language.

1. Concept features: features of each meaning ("small" = small / petit / klein) at the last
   token, where the answer is computed, found on every frame around every language's word for
   the meaning (held-out (concept, language) pairs left out); measured: the share of them that
   fire for their meaning in every language, against their rate on other meanings.
2. Language features: features of each language at the last token (is / est / ist).
3. On every held-out (concept, language) prompt: move the language features to another
   language's -> the same meaning's antonym in that language; move the concept features (at the
   word and the last token) to another meaning's -> that meaning's antonym in the prompt's
   language (`_kit.shift`: the 256 features whose class means differ most).

    python demos/multilingual.py [--quick] [--no-labels]
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import _kit
import torch
from _kit import OUT, Check, Row, Verdict

import tl_clt.toy as toy
from tl_clt import intervene

K = 6
WORD, LAST = -2, -1  # the operand word; the last token, where the answer is computed


def run(quick: bool = False, out: Path = OUT, labels: bool = True) -> Verdict:
    rm = _kit.replacement()
    items = toy.load_items("antonym", held_out=None)
    train = [it for it in items if not it.held_out]
    # lexicon from the items: words[(concept, side)][language], and the answer side
    words: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    for it in items:
        words[(it.concept, it.side)][it.language] = it.word
        words[(it.concept, 1 - it.side)][it.language] = it.answer
    meaning = {k: k[0].split("/")[k[1]] for k in words}  # ("big/small", 1) -> "small"
    key_of = {m: k for k, m in meaning.items()}
    languages = sorted({it.language for it in items})

    # every frame around every language's word for a meaning ("the opposite of petit is" is
    # training text too), except the held-out (concept, frame language) pairs
    frames = {it.language: it.prompt.replace(it.word, "{word}") for it in train}
    held_pairs = {(it.concept, it.language) for it in items if it.held_out}
    by_meaning = defaultdict(list)
    for (c, side), by_lang in words.items():
        for frame_lang, frame in frames.items():
            if (c, frame_lang) not in held_pairs:
                by_meaning[meaning[(c, side)]] += [frame.format(word=w) for w in by_lang.values()]
    meaning_acts = _kit.class_activations(rm, by_meaning, (WORD, LAST))
    concept = _kit.class_features({LAST: meaning_acts[LAST]}, K)[LAST]
    meaning_means = _kit.class_means(meaning_acts)
    by_language = {lang: [it.prompt for it in train if it.language == lang] for lang in languages}
    language = _kit.class_means(_kit.class_activations(rm, by_language, (LAST,)))
    verdict = Verdict("multilingual circuits: shared concepts, a language switch")

    # 1. do a meaning's features fire in every language?
    item_acts = _kit.activations(rm, [it.prompt for it in items], (LAST,))[LAST]
    item_meaning = [meaning[(it.concept, it.side)] for it in items]
    stride = max(1, len(items) // 60)  # about 60 prompts of other meanings
    shared, total, elsewhere = 0, 0, []
    for m, feats in concept.items():
        own = [i for i, mi in enumerate(item_meaning) if mi == m]
        if len({items[i].language for i in own}) < len(languages) or not feats:
            continue
        acts = item_acts[own]
        other = item_acts[[i for i in range(0, len(items), stride) if item_meaning[i] != m]]
        for f in feats:
            total += 1
            shared += bool((acts[:, f.layer, f.feature] > 0).all())
            elsewhere.append(float((other[:, f.layer, f.feature] > 0).float().mean()))
    verdict.notes.append(
        f"concept features: {shared}/{total} ({shared / max(total, 1):.0%}) fire for their "
        f"meaning in all {len(languages)} languages (held-out pairs included); on other meanings "
        f"they fire {torch.tensor(elsewhere).mean():.0%} of the time"
    )

    held = _kit.sample(toy.load_items("antonym"), 12 if quick else None)
    lang = Check("swap the language features -> same meaning, other language", target=0.9)
    swap_concept = Check("swap the concept features -> other meaning, same language", target=0.9)
    meanings = sorted(concept)
    for it in held:
        dst_lang = languages[(languages.index(it.language) + 1) % len(languages)]
        expected = words[(it.concept, 1 - it.side)][dst_lang]
        ivs = _kit.shift(rm, it.prompt, language, it.language, dst_lang)
        res = intervene(rm, it.prompt, ivs, mode=_kit.MODE)
        lang.rows.append(Row(it.prompt, f"-{it.language} +{dst_lang}", res.answer_before,
                             res.answer_after, expected, res.answer_after == expected))  # fmt: skip
        src = meaning[(it.concept, it.side)]
        dst = next(m for m in meanings[meanings.index(src) + 3 :] + meanings if m != src)
        c, side = key_of[dst]
        expected = words[(c, 1 - side)][it.language]
        ivs = _kit.shift(rm, it.prompt, meaning_means, src, dst)
        res = intervene(rm, it.prompt, ivs, mode=_kit.MODE)
        swap_concept.rows.append(Row(it.prompt, f"-{src} +{dst}", res.answer_before,
                                     res.answer_after, expected, res.answer_after == expected))  # fmt: skip
    verdict.checks += [lang, swap_concept]
    example = held[0]
    verdict.page = _kit.graph_page(rm, example.prompt, out, "multilingual", labels,
                                   f"multilingual: {example.prompt} -> {example.answer}")  # fmt: skip
    return verdict


if __name__ == "__main__":
    sys.exit(_kit.main(run, __doc__))
