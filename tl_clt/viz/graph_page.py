"""The graph page: one self-contained HTML file (JavaScript, CSS and data inlined, no network)
that draws an attribution graph in the paper's layout (tokens along the bottom, layers upward,
logits on top), with supernodes as boxes, a detail panel for the node under the mouse or
clicked (label, top contexts, activation, strongest input and output edges) and node / edge
thresholds that re-prune the graph in the page.

The page shows a pruned graph (`graph.prune(spec)`; an unpruned graph is pruned with a
`PruneSpec`). What it holds (`graph_data`): the pruned graph's nodes, plus the next most
influential nodes of the graph it was pruned from up to `max_nodes` (a prefix of that graph's
influence ranking, of every node or, with the spec's `rank_always_kept=False`, of the features
and errors, so the page's node pruning is exact for every node threshold up to the prefix's
cumulative share, `meta.max_node_threshold`), every edge among them (or, beyond `max_edges`,
the pruned graph's edges and the highest-scoring others: `meta.truncated`, and in-page
re-pruning is then approximate), each node's influence in the full graph, and the feature cards
of the most influential features. The first view is the pruned graph itself; the sliders run
the same algorithm (`tl_clt.prune.prune`, with the spec's `rank_always_kept`) in JavaScript. Open `page.html#node=ID` to land on a node,
`#nt=0.6&et=0.95&group=1` to set the thresholds and collapse the supernodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from tl_clt import prune as P
from tl_clt.errors import InputError
from tl_clt.graph import AttributionGraph, NodeKind
from tl_clt.labels.reader import check_index_for
from tl_clt.prune import PruneSpec
from tl_clt.supernodes import GroupedGraph, Supernode, group_supernodes
from tl_clt.viz.features import feature_payload
from tl_clt.viz.neuronpedia import node_ids, pruned_graph, supernode_lists
from tl_clt.viz.page import Page, static

KINDS = [NodeKind.EMBEDDING, NodeKind.FEATURE, NodeKind.ERROR, NodeKind.LOGIT]

_BODY = """
<header><h1 id="title"></h1><p id="subtitle"></p></header>
<div id="controls">
  <label>node threshold <input id="nt" type="range"> <output id="nt-value"></output></label>
  <label>edge threshold <input id="et" type="range"> <output id="et-value"></output></label>
  <label><input id="group" type="checkbox"> collapse supernodes</label>
  <button id="reset" type="button">reset</button>
  <span id="counts"></span>
</div>
<main>
  <div id="graph-box"><svg id="graph" xmlns="http://www.w3.org/2000/svg"></svg></div>
  <section id="detail"><p class="hint">hover over or click a node</p></section>
</main>
<p id="legend"></p>
"""


@dataclass
class GraphPage(Page):
    """A graph page (`save(path)`, `html()`, `_repr_html_()` for notebooks)."""

    n_nodes: int = 0  # nodes the page holds
    n_edges: int = 0


def render_graph(
    graph: AttributionGraph,
    index: Any = None,
    supernodes: GroupedGraph | Sequence[Supernode] | Literal["auto"] | None = None,
    clt: Any = None,
    *,
    prune: PruneSpec | None = None,
    max_nodes: int = 1500,
    max_edges: int = 60_000,
    max_cards: int = 400,
    n_examples: int = 4,
    title: str | None = None,
) -> GraphPage:
    """The page of a pruned graph (`graph.prune(...)`): its first view is that graph, and the
    sliders re-prune with its spec's `rank_always_kept` within the graph it was pruned from
    (`graph.parent`; a pruned graph read from files has none and is re-pruned within itself).
    An unpruned graph is pruned here with `prune` (default `PruneSpec()`); a pruned graph is
    never pruned again (`prune`, if given, must be its own spec).

    index: a `FeatureIndex` for labels and top contexts. supernodes: a `GroupedGraph` (made on
        this graph or on its pruned graph), supernodes of this graph, or "auto" to group the
        pruned graph with `group_supernodes(pruned, clt, index)`.
    max_nodes / max_edges: what the page holds for in-page re-pruning (the size budget);
        max_cards: features whose top contexts are inlined (the most influential first).
    """
    check_index_for(index, clt)  # an index of another transcoder would mislabel every feature
    data = graph_data(graph, index, supernodes, clt, prune, max_nodes, max_edges, max_cards,
                      n_examples, title)  # fmt: skip
    return GraphPage(
        title=data["meta"]["title"],
        body=_BODY,
        css=[static("features.css"), static("graph.css")],
        scripts=[static("features.js"), static("graph_prune.js"), static("graph.js"),
                 "TLGraph.page(TLGraph.data('tl-graph'));"],
        data={"tl-graph": data},
        iframe_height=760,
        n_nodes=len(data["nodes"]["id"]),
        n_edges=len(data["edges"]["w"]),
    )  # fmt: skip


def graph_data(
    graph: AttributionGraph,
    index: Any = None,
    supernodes: Any = None,
    clt: Any = None,
    prune: PruneSpec | None = None,
    max_nodes: int = 1500,
    max_edges: int = 60_000,
    max_cards: int = 400,
    n_examples: int = 4,
    title: str | None = None,
) -> dict[str, Any]:
    """The JSON-able data of a graph page (see the module docstring)."""
    pruned = pruned_graph(graph, prune)
    spec = pruned.info.prune_spec
    rank = spec.rank_always_kept is not False  # not recorded (older files): the default
    full = pruned.parent if pruned.parent is not None else pruned
    default = pruned.positions_in(full)
    infl = full.influence().influence
    shipped, max_nt, total = _node_prefix(full, infl, default, max_nodes, max_edges, rank)
    ids = node_ids(full)
    src, dst, weights, edge_keep, n_among = _edges(full, shipped, default, pruned, max_edges)
    groups = _supernodes(supernodes, graph, pruned, clt, index, [ids[i] for i in shipped])
    nodes = _node_table(full, shipped, infl, default, ids)
    meta = _meta(full, pruned, title, max_nt, total, n_among, len(src))
    data: dict[str, Any] = {
        "meta": meta,
        "tokens": [n.shown_token for n in full.nodes if n.kind is NodeKind.EMBEDDING],
        "nodes": nodes,
        "edges": {"s": src, "t": dst, "w": weights, "keep": edge_keep},
        "supernodes": groups,
        "labels": {},
        "cards": {"tokens": [], "features": []},
    }
    if index is not None:
        _add_labels(data, full, shipped, infl, index, max_cards, n_examples)
    return data


# ---------------------------------------------------------------------- parts
def _node_prefix(
    graph: AttributionGraph,
    infl: torch.Tensor,
    default: torch.Tensor,
    max_nodes: int,
    max_edges: int,
    rank_always_kept: bool = True,
) -> tuple[list[int], float, float]:
    """The nodes to hold: the always-kept nodes (tokens, logits), the default view's, and the
    longest prefix of the influence ranking (of every node, or with `rank_always_kept=False`
    of the features and errors) such that the nodes number at most `max_nodes` and the edges
    among them at most `max_edges` (never less than what the default view needs); the largest
    node threshold the page can prune exactly (the cumulative share of the ranked influence at
    the prefix's end); and the ranked nodes' total influence."""
    n = infl.shape[0]
    keep = graph.mask(NodeKind.EMBEDDING, NodeKind.LOGIT)
    ranked_nodes = torch.ones(n, dtype=torch.bool) if rank_always_kept else ~keep
    total = float(infl[ranked_nodes].double().sum())
    if graph.original_index is not None:  # a pruned graph: all of it
        return list(range(n)), 1.0, total
    base = torch.zeros(n, dtype=torch.bool)
    base[default] = True
    base |= keep
    among = ranked_nodes.nonzero()[:, 0]
    order = among[torch.argsort(infl[among], descending=True, stable=True)]
    cum = torch.cumsum(infl[order].double(), 0) / infl[order].double().sum().clamp(min=1e-30)
    nonzero = graph.adjacency != 0

    def chosen(k: int) -> torch.Tensor:
        mask = base.clone()
        mask[order[:k]] = True
        return mask

    def fits(k: int) -> bool:
        mask = chosen(k)
        return int(mask.sum()) <= max_nodes and int(nonzero[mask][:, mask].sum()) <= max_edges

    # the shortest prefix holding the default view's ranked nodes, then the longest that fits
    ranked = torch.nonzero(base[order] & ~keep[order])
    lo = int(ranked.max()) + 1 if ranked.numel() else 0
    hi = order.shape[0]
    if fits(hi):
        lo = hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    max_nt = float(cum[lo - 1]) if lo > 0 else 0.0
    return chosen(lo).nonzero()[:, 0].tolist(), min(max_nt, 1.0), total


def _edges(graph, shipped, default, pruned, max_edges):
    index = torch.tensor(shipped, dtype=torch.long)
    A = graph.adjacency[index][:, index]
    where = {int(i): k for k, i in enumerate(shipped)}
    default_edges = torch.zeros_like(A, dtype=torch.bool)
    d = torch.tensor([where[int(i)] for i in default.tolist()], dtype=torch.long)
    default_edges[d[:, None], d[None, :]] = pruned.adjacency != 0
    nz = (A != 0).nonzero()
    n_nonzero = nz.shape[0]
    if n_nonzero > max_edges:  # keep the default view's edges and the best-scoring others
        Ahat = P.normalise(A)
        score = Ahat[nz[:, 0], nz[:, 1]] + 10.0 * default_edges[nz[:, 0], nz[:, 1]]
        nz = nz[torch.argsort(score, descending=True)[:max_edges]]
        nz = nz[torch.argsort(nz[:, 0] * A.shape[0] + nz[:, 1])]
    w = A[nz[:, 0], nz[:, 1]].tolist()
    keep = default_edges[nz[:, 0], nz[:, 1]].int().tolist()
    return nz[:, 1].tolist(), nz[:, 0].tolist(), [_round(x) for x in w], keep, n_nonzero


def _round(x: float, digits: int = 7) -> float:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else 0.0


def _node_table(graph, shipped, infl, default, ids) -> dict[str, list]:
    in_default = set(default.tolist())
    cols: dict[str, list] = {k: [] for k in
                             ("id", "kind", "layer", "pos", "feature", "token", "act", "infl", "w",
                              "prob", "keep")}  # fmt: skip
    for i in shipped:
        n = graph.nodes[i]
        cols["id"].append(ids[i])
        cols["kind"].append(KINDS.index(n.kind))
        cols["layer"].append(-1 if n.layer is None else n.layer)
        cols["pos"].append(n.position)
        cols["feature"].append(-1 if n.feature is None else n.feature)
        cols["token"].append(n.shown_token)
        cols["act"].append(None if n.activation is None else _round(n.activation, 5))
        cols["infl"].append(_round(float(infl[i])))
        cols["w"].append(_round(n.weight))
        cols["prob"].append(None if n.probability is None else _round(n.probability, 5))
        cols["keep"].append(int(i in in_default))
    return cols


def _meta(graph, pruned, title, max_nt, total, n_among, n_held) -> dict[str, Any]:
    info, spec = graph.info, pruned.info.prune_spec
    return {
        "title": title or f"attribution graph: {graph.prompt}",
        "prompt": graph.prompt,
        "model": info.model,
        "transcoder": info.transcoder,
        "n_layers": info.n_layers,
        "n_graph_nodes": graph.n_nodes,
        "node_threshold": spec.node_threshold,
        "edge_threshold": spec.edge_threshold,
        "rank_always_kept": spec.rank_always_kept is not False,
        "max_node_threshold": max_nt,
        "total_influence": total,  # of the nodes the node threshold ranks
        "replacement": pruned.info.replacement_score,
        "completeness": pruned.info.completeness_score,
        "replacement_strict": pruned.info.replacement_score_strict,
        "completeness_strict": pruned.info.completeness_score_strict,
        "edges_among_nodes": n_among,  # nonzero edges among the nodes held
        "truncated": n_among > n_held,
        "hist_edges": None,
    }


def _supernodes(supernodes, graph, pruned, clt, index, ids: list[str]) -> list[list]:
    """[name, [positions in the page's node table]] for each supernode."""
    if supernodes is None:
        return []
    if isinstance(supernodes, str):
        if supernodes != "auto":
            raise InputError(
                f"supernodes must be a GroupedGraph, a list or 'auto', got {supernodes!r}"
            )
        supernodes = group_supernodes(pruned, clt, index)
    position = {nid: k for k, nid in enumerate(ids)}
    lists = supernode_lists(graph, supernodes, set(ids))
    return [[name, [position[m] for m in members]] for name, *members in lists]


def _add_labels(data, graph, shipped, infl, index, max_cards, n_examples) -> None:
    feats: dict[tuple[int, int], float] = {}
    for i in shipped:
        n = graph.nodes[i]
        if n.kind is NodeKind.FEATURE:
            key = (n.layer, n.feature)
            feats[key] = max(feats.get(key, 0.0), float(infl[i]))
    for layer, feature in feats:
        lab = index.label(layer, feature)
        if lab is not None and lab.text:
            data["labels"][f"{layer}:{feature}"] = lab.text
    ranked = sorted(feats, key=lambda k: -feats[k])[:max_cards]
    data["cards"] = feature_payload(index, ranked, n_examples)
    data["meta"]["hist_edges"] = index.meta["identity"]["hist_edges"]
