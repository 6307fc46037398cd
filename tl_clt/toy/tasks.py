"""Evaluation items of the toy corpus as typed records, and `evaluate`: per-family accuracy of a
model (through its `Lens`) by greedy decoding at each item's answer position.

Every item is a prompt (text without `<bos>`; the model interface prepends it) and the one-token
answer that follows. A rhyme item's prompt ends at the line break: the model writes the second
line's first `n_generate` words greedily and the next word must rhyme (any word of `accept`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import torch
from jaxtyping import Int
from torch import Tensor

from tl_clt.errors import InputError

Family = Literal["two_hop", "addition", "antonym", "entity", "rhyme"]
FAMILIES: tuple[Family, ...] = get_args(Family)
EntityStatus = Literal["known", "unknown", "fact_only"]


@dataclass(frozen=True, kw_only=True)
class Item:
    """One evaluation prompt. `accept` holds every correct answer (`answer` among them);
    `group` splits a family for reporting (entities: known / unknown / fact_only)."""

    prompt: str
    answer: str
    family: Family
    held_out: bool
    accept: tuple[str, ...] = ()
    n_generate: int = 0
    group: str = ""

    def __post_init__(self) -> None:
        if not self.accept:
            object.__setattr__(self, "accept", (self.answer,))
        if not self.group:
            object.__setattr__(self, "group", self.family)

    @property
    def text(self) -> str:
        """Prompt and answer as training text (rhymes: with the canonical second line)."""
        return f"{self.prompt} {self.answer}"


@dataclass(frozen=True, kw_only=True)
class TwoHopItem(Item):
    """ "the capital of the state containing {city} is" -> capital; the state is never written."""

    city: str
    state: str
    capital: str


@dataclass(frozen=True, kw_only=True)
class AdditionItem(Item):
    """ "{a} + {b} =" -> str(a + b)."""

    a: int
    b: int


@dataclass(frozen=True, kw_only=True)
class AntonymItem(Item):
    """The language's frame around `word` -> its antonym in the same language. `concept` is the
    English pair ("big/small"), `side` 0 or 1 says which of its words `word` means."""

    concept: str
    language: str
    word: str
    side: int


@dataclass(frozen=True, kw_only=True)
class EntityItem(Item):
    """A question about a person -> the attribute, or "unknown" for names without facts."""

    name: str
    relation: str
    status: EntityStatus


@dataclass(frozen=True, kw_only=True)
class RhymeItem(Item):
    """First line and line break -> a second line "<lead> as a <word>" whose last word rhymes
    with `word` (`rhyme_class`); `accept` is the class minus `word` itself."""

    word: str
    rhyme_class: str
    line2: str  # the canonical second line (with `answer` as its rhyme)

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.line2}"


class Accuracy(NamedTuple):
    family: Family
    group: str
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")


def select(
    items: Iterable[Item],
    family: Family | None = None,
    held_out: bool | None = None,
    group: str | None = None,
) -> list[Item]:
    """Items filtered by family, held-out flag and group (None: any)."""
    return [
        it
        for it in items
        if (family is None or it.family == family)
        and (held_out is None or it.held_out == held_out)
        and (group is None or it.group == group)
    ]


def predict(lens, items: Sequence[Item], batch_size: int = 256) -> list[str]:
    """The model's greedy answer to each item (after its `n_generate` greedy words)."""
    out: list[str | None] = [None] * len(items)
    by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
    tokens = [lens.to_tokens(it.prompt)[0] for it in items]
    for i, (it, toks) in enumerate(zip(items, tokens)):
        by_shape[(len(toks), it.n_generate)].append(i)
    for (_, n_generate), idx in by_shape.items():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            answers = _greedy(lens, torch.stack([tokens[i] for i in chunk]), n_generate + 1)
            for i, tok in zip(chunk, answers[:, -1].tolist()):
                out[i] = lens.tokenizer.convert_ids_to_tokens(int(tok))
    return [str(o) for o in out]


@torch.no_grad()
def _greedy(lens, tokens: Int[Tensor, "batch pos"], n_new: int) -> Int[Tensor, "batch n_new"]:
    tokens = tokens.to(lens.device)
    for _ in range(n_new):
        nxt = lens.model(tokens)[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, nxt], dim=1)
    return tokens[:, -n_new:]


def evaluate(lens, items: Sequence[Item], batch_size: int = 256) -> list[Accuracy]:
    """Accuracy per (family, group) of greedy answers; an answer is right if it is in
    `accept`. Groups are listed in FAMILIES order, then by name."""
    if not items:
        raise InputError("no items to evaluate; pass at least one tasks.Item")
    preds = predict(lens, items, batch_size)
    counts: dict[tuple[Family, str], list[int]] = defaultdict(lambda: [0, 0])
    for it, pred in zip(items, preds):
        c = counts[(it.family, it.group)]
        c[0] += pred in it.accept
        c[1] += 1
    keys = sorted(counts, key=lambda k: (FAMILIES.index(k[0]), k[1]))
    return [Accuracy(f, g, *counts[(f, g)]) for f, g in keys]


def format_accuracy(rows: Sequence[Accuracy]) -> str:
    """A small table of `evaluate` results."""
    lines = [f"{'family':<10} {'group':<10} {'correct':>8} {'total':>6} {'accuracy':>9}"]
    for r in rows:
        lines.append(f"{r.family:<10} {r.group:<10} {r.correct:>8} {r.total:>6} {r.accuracy:>9.1%}")
    return "\n".join(lines)
