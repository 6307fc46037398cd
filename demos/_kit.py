"""What the five demos share, written on tl_clt's public API only: load the shipped model and
transcoder, find the features that tell one class of prompts from the others (a state, a rhyme
class, a language...), swap one class's features for another's with interventions, print the
verdict table, and write the attribution graph page.

Each demo is a module with `run(quick=False, out=OUT, labels=True) -> Verdict` and a `main()`;
`python demos/<name>.py [--quick] [--out DIR] [--no-labels]` runs it.
"""

from __future__ import annotations

import argparse
import random
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

import tl_clt.toy as toy
from tl_clt import (
    AttributionGraph,
    FeatureIndex,
    IndexMismatchError,
    Intervention,
    ReplacementModel,
    attribute,
    build_feature_index,
    render_graph,
)
from tl_clt import hooks as H

# The demos turn off a class's most selective features at every position of a prompt, whether
# or not each fires there (the success rates measure what that does); `intervene`'s warning that
# some scaled features are inactive would repeat on every row.
warnings.filterwarnings("ignore", message=r".*of the scaled features .* not active")

OUT = Path(__file__).resolve().parent / "out"
SHIFT_K, SHIFT_GAIN = 256, 1.5  # `shift`: features moved per position, and by how much
MODE = "unconstrained"  # interventions act on the real model: its MLPs, attention and norms run


_RM: ReplacementModel | None = None


def replacement() -> ReplacementModel:
    """The shipped model with its transcoder (loaded once per process)."""
    global _RM
    if _RM is None:
        torch.manual_seed(0)
        _RM = toy.load_replacement()
    return _RM


# ---------------------------------------------------------------- finding features
@torch.no_grad()
def activations(
    rm: ReplacementModel, prompts: Sequence[str], positions: Sequence[int] = (-1,)
) -> dict[int, torch.Tensor]:
    """Feature activations {position: [n_prompts, n_layers, n_features]} at each position
    (negative: from the prompt's end), read from the transcoder's hooks in one spliced forward
    pass per batch of prompts of equal length."""
    names = [H.features(layer) for layer in range(rm.n_layers)]
    out = {p: torch.zeros(len(prompts), rm.n_layers, rm.clt.cfg.n_features) for p in positions}
    by_len: dict[int, list[int]] = defaultdict(list)
    tokens = [rm.lens.tokens(p)[0] for p in prompts]
    for i, t in enumerate(tokens):
        by_len[len(t)].append(i)
    for idx in by_len.values():
        for start in range(0, len(idx), 256):
            chunk = idx[start : start + 256]
            with torch.no_grad():
                batch = torch.stack([tokens[i] for i in chunk])
                _, cache = rm.run_with_cache(batch, names_filter=names)
            acts = torch.stack([cache[n] for n in names], 2).float().cpu()  # [b, pos, L, F]
            for p in positions:
                out[p][chunk] = acts[:, p]
    return out


@dataclass(frozen=True)
class Feature:
    layer: int
    feature: int
    score: float  # mean activation in the class minus the largest mean of another class
    value: float  # mean activation in the class (what an injection clamps it to)

    def __str__(self) -> str:
        return f"{self.layer}:{self.feature}"


def selective(
    acts: dict[str, torch.Tensor], k: int = 4, min_share: float = 0.5
) -> dict[str, list[Feature]]:
    """For each class (acts[class]: [n, layers, features]), the `k` features whose mean activation
    on the class exceeds their mean on every other class by the most, among features active on
    at least `min_share` of the class's prompts."""
    names = list(acts)
    means = torch.stack([acts[c].mean(0) for c in names])  # [class, L, F]
    share = torch.stack([(acts[c] > 0).float().mean(0) for c in names])
    out = {}
    for i, c in enumerate(names):
        others = torch.cat([means[:i], means[i + 1 :]]).amax(0) if len(names) > 1 else 0
        score = (means[i] - others).masked_fill(share[i] < min_share, float("-inf"))
        top = score.flatten().topk(k)
        F = score.shape[1]
        out[c] = [
            Feature(int(j) // F, int(j) % F, float(s), float(means[i].flatten()[j]))
            for s, j in zip(top.values, top.indices)
            if s > 0
        ]
    return out


def swap(
    remove: Sequence[Feature],
    add: Sequence[Feature],
    position: int | str = "all",
    suppress: float = -1.0,
    gain: float = 1.0,
) -> list[Intervention]:
    """Turn `remove` down (scale `suppress`) and clamp `add` to `gain` × its class mean."""
    return [Intervention(f.layer, f.feature, position, scale=suppress) for f in remove] + [
        Intervention(f.layer, f.feature, position, value=gain * f.value) for f in add
    ]


Acts = dict[int, dict[str, torch.Tensor]]  # position -> class -> activations [n, L, F]
Found = dict[int, dict[str, list[Feature]]]  # position -> class -> features
Means = dict[int, dict[str, torch.Tensor]]  # position -> class -> mean activations [L, F]


def class_activations(
    rm: ReplacementModel, prompts: dict[str, Sequence[str]], positions: Sequence[int] = (-1,)
) -> Acts:
    """`activations` of each class of prompts at each position."""
    per_class = {c: activations(rm, ps, positions) for c, ps in prompts.items() if ps}
    return {p: {c: a[p] for c, a in per_class.items()} for p in positions}


def class_features(acts: Acts, k: int = 4, min_share: float = 0.5) -> Found:
    """`selective` features of each class, at each position."""
    return {pos: selective(by_class, k, min_share) for pos, by_class in acts.items()}


def class_means(acts: Acts) -> Means:
    """Mean feature activations [layers, features] of each class at each position."""
    return {pos: {c: a.mean(0) for c, a in by_class.items()} for pos, by_class in acts.items()}


def swap_at(
    found: Found, src: str | None, dst: str | None, suppress: float = -1.0, gain: float = 1.0
) -> list[Intervention]:
    """At every position of `found`: class `src`'s features down, class `dst`'s injected
    (either may be None)."""
    ivs = []
    for pos, by_class in found.items():
        ivs += swap(by_class[src] if src else [], by_class[dst] if dst else [], pos,
                    suppress, gain)  # fmt: skip
    return ivs


def shift(
    rm: ReplacementModel,
    prompt: str,
    means: Means,
    src: str,
    dst: str,
    k: int | None = None,
    gain: float | None = None,
) -> list[Intervention]:
    """Move `prompt`'s features from class `src` to class `dst`: at each position, the `k`
    features whose class means differ most are set to their activation on this prompt plus
    `gain` × (dst mean − src mean), floored at 0 (a feature-level activation patch)."""
    k, gain = k or SHIFT_K, gain or SHIFT_GAIN
    ivs = []
    current = activations(rm, [prompt], list(means))
    for pos, by_class in means.items():
        cur = current[pos][0]
        delta = by_class[dst] - by_class[src]
        F = delta.shape[1]
        for j in delta.abs().flatten().topk(k).indices.tolist():
            layer, feature = divmod(j, F)
            value = max(0.0, float(cur[layer, feature] + gain * delta[layer, feature]))
            ivs.append(Intervention(layer, feature, pos, value=value))
    return ivs


def features_of(found: Found, cls: str) -> set[tuple[int, int]]:
    return {(f.layer, f.feature) for by_class in found.values() for f in by_class.get(cls, [])}


# ---------------------------------------------------------------- verdicts
@dataclass
class Row:
    prompt: str
    intervention: str
    before: str
    after: str
    expected: str
    ok: bool


@dataclass
class Check:
    """One claim tested over items: its rows and success rate."""

    name: str
    rows: list[Row] = field(default_factory=list)
    target: float | None = None  # the success rate the issue asks for, if any

    @property
    def rate(self) -> float:
        return sum(r.ok for r in self.rows) / len(self.rows) if self.rows else float("nan")

    @property
    def passed(self) -> bool:
        return self.target is None or self.rate >= self.target

    def table(self, max_rows: int | None = 8) -> str:
        max_rows = len(self.rows) if max_rows is None else max_rows
        w = max([len(r.prompt) for r in self.rows[:max_rows]] + [6])
        lines = [f"{'prompt':<{w}}  {'intervention':<28} {'before':<10} {'after':<10} "
                 f"{'expected':<14} ok"]  # fmt: skip
        for r in self.rows[:max_rows]:
            lines.append(f"{r.prompt:<{w}}  {r.intervention:<28.28} {r.before:<10} {r.after:<10} "
                         f"{r.expected:<14.14} {'yes' if r.ok else 'NO'}")  # fmt: skip
        if len(self.rows) > max_rows:
            lines.append(f"... {len(self.rows) - max_rows} more rows")
        target = f" (target {self.target:.0%})" if self.target is not None else ""
        n_ok = sum(r.ok for r in self.rows)
        lines.append(f"success: {n_ok}/{len(self.rows)} = {self.rate:.1%}{target}")
        return "\n".join(lines)


@dataclass
class Verdict:
    """What a demo found: its checks, notes (measured facts that are not pass/fail), and the
    graph page it wrote."""

    finding: str
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    page: Path | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def report(self, max_rows: int | None = 8) -> str:
        lines = [f"== {self.finding}"]
        for c in self.checks:
            lines += ["", f"-- {c.name}", c.table(max_rows)]
        if self.notes:
            lines += [""] + [f"* {n}" for n in self.notes]
        if self.page:
            lines.append(f"\ngraph page: {self.page}")
        lines.append(f"verdict: {'holds' if self.passed else 'DOES NOT HOLD'} "
                     f"({self.seconds:.0f} s)")  # fmt: skip
        return "\n".join(lines)


# ---------------------------------------------------------------- graphs
_INDEX: dict[Path, FeatureIndex] = {}


def feature_index(out: Path) -> FeatureIndex:
    """The transcoder's feature index over the shipped corpus, labelled with the shipped token
    classes (as `tl-clt label` does): built into `out` the first time, reopened afterwards,
    rebuilt when it was made for another transcoder (it is a cache of the demos)."""
    path = (out / "features.db").resolve()
    if path not in _INDEX:
        rm = replacement()
        kw = dict(path=path, progress=True, token_classes=toy.token_classes())
        try:
            _INDEX[path] = build_feature_index(rm, toy.corpus_texts(), **kw)
        except IndexMismatchError as e:  # made for another transcoder: rebuild the cache
            print(f"rebuilding {path}: {e}")
            _INDEX[path] = build_feature_index(rm, toy.corpus_texts(), overwrite=True, **kw)
    return _INDEX[path]


_GRAPHS: dict[str, tuple[AttributionGraph, AttributionGraph]] = {}


def trace(rm: ReplacementModel, prompt: str) -> tuple[AttributionGraph, AttributionGraph]:
    """The attribution graph of `prompt` and its default pruning (traced once per process)."""
    if prompt not in _GRAPHS:
        graph = attribute(rm, prompt)
        _GRAPHS[prompt] = graph, graph.prune()
    return _GRAPHS[prompt]


def graph_page(
    rm: ReplacementModel, prompt: str, out: Path, name: str, labels: bool, title: str
) -> Path:
    """Trace `prompt`, group its pruned graph into supernodes, and write the page."""
    _, pruned = trace(rm, prompt)
    index = feature_index(out) if labels else None
    page = render_graph(pruned, index=index, supernodes="auto", clt=rm.clt, title=title)
    return page.save(out / f"{name}.html")


def sample(items: Sequence, n: int | None) -> list:
    """`n` items drawn without replacement by a seeded generator, in their original order
    (all when n is None): the same sample on every run."""
    items = list(items)
    if n is None or n >= len(items):
        return items
    return [items[i] for i in sorted(random.Random(0).sample(range(len(items)), n))]


def main(run: Callable[..., Verdict], doc: str | None) -> int:
    p = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a small sample of the held-out items")
    p.add_argument("--out", type=Path, default=OUT, help="where the graph page goes")
    p.add_argument("--no-labels", action="store_true", help="skip the feature index and labels")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    verdict = run(quick=args.quick, out=args.out, labels=not args.no_labels)
    verdict.seconds = time.perf_counter() - t0
    print(verdict.report())
    return 0 if verdict.passed else 1


def graph_share(
    rm: ReplacementModel, prompt: str, features: set[tuple[int, int]]
) -> tuple[float, int, int]:
    """In the pruned attribution graph of `prompt`: the share of the feature nodes' influence
    held by nodes of `features` ((layer, feature) at any position), the best rank among them
    (1: the most influential feature node; 0: none present), and how many such nodes there are."""
    from tl_clt import NodeKind

    _, pruned = trace(rm, prompt)
    infl = pruned.influence().influence
    feats = pruned.indices(NodeKind.FEATURE)
    order = sorted(feats, key=lambda i: -float(infl[i]))
    hits = [i for i in order if (pruned.nodes[i].layer, pruned.nodes[i].feature) in features]
    total = float(sum(infl[i] for i in feats)) or 1.0
    share = float(sum(infl[i] for i in hits)) / total
    rank = order.index(hits[0]) + 1 if hits else 0
    return share, rank, len(hits)
