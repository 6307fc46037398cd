"""Pure functions on attribution graphs held as plain tensors: node influence, pruning, the
replacement and completeness scores, pruned subgraphs and the strongest paths.

Conventions: `A[target, source]` is a dense adjacency matrix of direct effects; `w` holds each
node's weight as an output (a logit target's probability, 0 elsewhere). `Â` (`normalise`) is
|A| with every row scaled to sum to 1, so `Â[i, j]` is the share of i's input that comes from j.
Influence is `w (Â + Â² + ...)` = `wᵀ((I − Â)⁻¹ − I)`; A is nilpotent (a DAG), so the series
ends. Method: Ameisen et al. (2025), "Circuit Tracing", §Pruning and §Evaluating graphs.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tl_clt.errors import InputError


@dataclass(frozen=True)
class PruneSpec:
    """How a graph is pruned (`prune`): the node and edge thresholds and whether the node
    threshold ranks every node (`rank_always_kept=True`, circuit-tracer's choice) or only those
    pruning may drop (features and errors). A pruned graph records its spec in
    `info.prune_spec`; `rank_always_kept` is None only on pruned graphs saved before it was
    recorded."""

    node_threshold: float = 0.8
    edge_threshold: float = 0.98
    rank_always_kept: bool | None = True

    def __post_init__(self) -> None:
        _check_fraction("node_threshold", self.node_threshold)
        _check_fraction("edge_threshold", self.edge_threshold)
        if self.rank_always_kept is not None and not isinstance(self.rank_always_kept, bool):
            raise InputError(
                f"rank_always_kept must be True or False, got {self.rank_always_kept!r}"
            )


class Influence(NamedTuple):
    influence: Float[Tensor, " n"]  # each node's influence on the outputs
    cumulative: Float[Tensor, " n"]  # share of all influence held by nodes ranked at or above it


class PruneResult(NamedTuple):
    node_mask: Bool[Tensor, " n"]
    edge_mask: Bool[Tensor, "n n"]  # [target, source]
    influence: Float[Tensor, " n"]  # node influence in the unpruned graph
    cumulative: Float[Tensor, " n"]


class Scores(NamedTuple):
    replacement: float  # influence reaching the outputs from tokens / (tokens + errors)
    completeness: float  # influence-weighted share of node inputs that are not errors


class KeptInfluence(NamedTuple):
    n_features: int  # feature nodes in the graph
    n_kept: int  # of them, kept
    kept_share: float  # share of the features' influence the kept ones hold
    dropped: float  # the dropped features' influence over the outputs' total weight
    token_share: float  # the tokens' share of all node influence


class PrunedGraph(NamedTuple):
    adjacency: Float[Tensor, "m m"]  # kept nodes, kept edges only
    index: Int[Tensor, " m"]  # each kept node's index in the original graph


class Path(NamedTuple):
    score: float  # product of the normalised |weights| along the path
    nodes: tuple[int, ...]  # from the input node to the target
    weights: tuple[float, ...]  # the raw edge weights along the path


def normalise(A: Float[Tensor, "rows n"]) -> Float[Tensor, "rows n"]:
    """|A| with each row divided by its sum (rows without inputs stay zero)."""
    a = A.abs()
    return a / a.sum(dim=1, keepdim=True).clamp(min=1e-30)


def influence(Ahat: Float[Tensor, "n n"], w: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
    """w (Â + Â² + ...), summed until the paths run out; raises if the graph has a cycle."""
    w = w.to(Ahat.dtype)
    current = w @ Ahat
    total = current.clone()
    for _ in range(Ahat.shape[0] + 1):
        if not bool(current.any()):
            return total
        current = current @ Ahat
        total += current
    raise InputError("the adjacency matrix has a cycle; an attribution graph must be a DAG")


def node_influence(A: Float[Tensor, "n n"], w: Float[Tensor, " n"]) -> Influence:
    """Each node's influence on the outputs, and its cumulative share when ranked."""
    infl = influence(normalise(A), w)
    return Influence(infl, _cumulative(infl))


def _cumulative(scores: Tensor) -> Tensor:
    order = torch.argsort(scores, descending=True, stable=True)
    cum = torch.cumsum(scores[order], 0) / scores.sum().clamp(min=1e-30)
    out = torch.empty_like(scores)
    out[order] = cum
    return out


def cutoff(scores: Tensor, fraction: float) -> float:
    """The smallest score such that keeping every score at or above it keeps at least
    `fraction` of the total (ties kept together); inf when all scores are zero."""
    values = torch.sort(scores.flatten(), descending=True).values
    n_positive = int((values > 0).sum())
    if n_positive == 0:
        return float("inf")
    cum = torch.cumsum(values, 0) / values.sum()
    index = int(torch.searchsorted(cum, torch.tensor(fraction, dtype=cum.dtype)))
    return float(values[min(index, n_positive - 1)])


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise InputError(f"{name} must lie in [0, 1], got {value}")


def prune(
    A: Float[Tensor, "n n"],
    w: Float[Tensor, " n"],
    always_keep: Bool[Tensor, " n"],
    needs_input: Bool[Tensor, " n"],
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    rank_always_kept: bool = True,
) -> PruneResult:
    """Keep the most influential nodes until they hold `node_threshold` of all influence
    (plus `always_keep`: tokens and logits), then, in the graph of kept nodes, the edges
    scored by Â[i, j]·(influence_i + w_i) until `edge_threshold` of the edge score; finally
    drop, until nothing changes, nodes left without outgoing edges (unless always kept) and
    `needs_input` nodes (features) left without incoming ones.

    `rank_always_kept=False` measures `node_threshold` against the influence of the other
    nodes only (features and errors): in a small model the tokens can hold a large share of all
    influence, and ranking them with the rest prunes more of the features' influence than the
    threshold suggests. The default ranks every node, as circuit-tracer does."""
    _check_fraction("node_threshold", node_threshold)
    _check_fraction("edge_threshold", edge_threshold)
    infl = influence(normalise(A), w)
    ranked = infl if rank_always_kept else infl[~always_keep]
    node_mask = always_keep | ((infl >= cutoff(ranked, node_threshold)) & (infl > 0))
    kept = A * (node_mask[:, None] & node_mask[None, :])
    Ahat = normalise(kept)
    edge_score = Ahat * (influence(Ahat, w) + w.to(Ahat.dtype))[:, None]
    edge_mask = (edge_score >= cutoff(edge_score, edge_threshold)) & (edge_score > 0)
    while True:
        new = node_mask & (always_keep | edge_mask.any(0)) & (~needs_input | edge_mask.any(1))
        edge_mask &= new[:, None] & new[None, :]
        if bool((new == node_mask).all()):
            break
        node_mask = new
    return PruneResult(node_mask, edge_mask, infl, _cumulative(infl))


def scores(
    A: Float[Tensor, "n n"],
    w: Float[Tensor, " n"],
    is_error: Bool[Tensor, " n"],
    is_token: Bool[Tensor, " n"],
    node_mask: Bool[Tensor, " n"] | None = None,
    edge_mask: Bool[Tensor, "n n"] | None = None,
) -> Scores:
    """Replacement and completeness scores of the graph `A`. With masks, the strict scores of
    its pruning, measured in `A`: the input shares of pruned nodes and edges count as error, so
    they say how much of `A`'s answer the pruned graph accounts for. (A pruned graph's scores
    as it stands, what circuit-tracer's compute_graph_scores gives on a pruned adjacency, are
    `scores` of its own adjacency, `subgraph(A, node_mask, edge_mask).adjacency`.)

    Replacement: influence reaching the outputs from tokens / (from tokens + from errors).
    Completeness: Σ_n (1 − share of n's input from errors)(influence_n + w_n) / Σ_n (influence_n + w_n).
    """
    n = A.shape[0]
    if node_mask is None:
        node_mask = torch.ones(n, dtype=torch.bool, device=A.device)
    if edge_mask is None:
        edge_mask = torch.ones(n, n, dtype=torch.bool, device=A.device)
    w = w.to(A.dtype)
    if not bool((w * node_mask).sum() > 0):
        raise InputError("the graph has no output weight (logit nodes with probability > 0)")
    Ahat = normalise(A)
    kept = Ahat * (edge_mask & node_mask[:, None] & node_mask[None, :])
    infl = influence(kept, w) * node_mask
    total = infl + w * node_mask
    has_input = Ahat.sum(1) > 0
    lost = torch.where(has_input, 1 - kept.sum(1), torch.zeros_like(infl)) * node_mask
    unexplained = lost + (kept * is_error[None, :]).sum(1)
    from_tokens = (infl * is_token).sum()
    from_errors = (infl * is_error).sum() + (lost * total).sum()
    replacement = from_tokens / (from_tokens + from_errors).clamp(min=1e-30)
    completeness = ((1 - unexplained) * total).sum() / total.sum()
    return Scores(float(replacement), float(completeness))


def kept_influence(
    infl: Float[Tensor, " n"],
    w: Float[Tensor, " n"],
    kept: Bool[Tensor, " n"],
    is_feature: Bool[Tensor, " n"],
    is_token: Bool[Tensor, " n"],
) -> KeptInfluence:
    """How much of the features' influence (`influence`, in the unpruned graph) a pruning that
    keeps `kept` holds, and the tokens' share of all influence: the influence pruning drops
    counts as error in the strict pruned scores, so `dropped` bounds how far they fall."""
    tiny = 1e-30
    features = infl[is_feature].sum().clamp(min=tiny)
    return KeptInfluence(
        n_features=int(is_feature.sum()),
        n_kept=int((is_feature & kept).sum()),
        kept_share=float(infl[is_feature & kept].sum() / features),
        dropped=float(infl[is_feature & ~kept].sum() / w.sum().clamp(min=tiny)),
        token_share=float(infl[is_token].sum() / infl.sum().clamp(min=tiny)),
    )


def subgraph(
    A: Float[Tensor, "n n"],
    node_mask: Bool[Tensor, " n"],
    edge_mask: Bool[Tensor, "n n"] | None = None,
) -> PrunedGraph:
    """The adjacency among kept nodes (kept edges only) and the kept nodes' original indices."""
    index = node_mask.nonzero()[:, 0]
    kept = A if edge_mask is None else A * edge_mask
    return PrunedGraph(kept[index][:, index], index)


def top_paths(A: Float[Tensor, "n n"], target: int, k: int = 5) -> list[Path]:
    """The k paths from an input node (one without incoming edges) to `target` with the
    largest product of normalised |weights| (each path's share of the target's input).
    Meant for pruned graphs: it walks every edge in Python."""
    Ahat = normalise(A)
    sources: list[list[int]] = [[] for _ in range(A.shape[0])]
    for i, j in A.nonzero().tolist():
        sources[i].append(j)
    order = _reverse_postorder(sources, target)
    best: dict[int, list[tuple[float, tuple[int, ...]]]] = {target: [(1.0, (target,))]}
    targets_of: dict[int, list[int]] = {}
    for i in order:
        for j in sources[i]:
            targets_of.setdefault(j, []).append(i)
    for j in order[1:]:
        cands = [
            (float(Ahat[i, j]) * s, (j, *p)) for i in targets_of.get(j, []) for s, p in best[i]
        ]
        best[j] = heapq.nlargest(k, cands)
    starts = [c for j in order if not sources[j] and j != target for c in best[j]]
    return [
        Path(s, p, tuple(float(A[b, a]) for a, b in zip(p[:-1], p[1:])))
        for s, p in heapq.nlargest(k, starts)
    ]


def _reverse_postorder(sources: list[list[int]], root: int) -> list[int]:
    """Nodes that reach `root`, each listed after every node it feeds (root first)."""
    post, seen, stack = [], {root}, [(root, iter(sources[root]))]
    while stack:
        node, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            post.append(node)
            stack.pop()
        elif nxt not in seen:
            seen.add(nxt)
            stack.append((nxt, iter(sources[nxt])))
    return post[::-1]
