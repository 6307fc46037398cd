"""`group_supernodes`: gather the feature nodes of an attribution graph that play the same role
into supernodes, automatically (agglomerative clustering, scikit-learn) and/or by hand.

Similarity of two feature nodes, each signal a cosine similarity s in [-1, 1]:

- decoder: their features' total writes to the residual stream, Σ_t W_dec^{l→t}[f] (needs the
  transcoder);
- labels: TF-IDF vectors of their labels (needs a `FeatureIndex`; pairs where either label is
  missing skip this signal);
- inputs / outputs: their rows / columns of the adjacency (signed edge profiles: what drives
  them, what they drive).

The distance is the weighted mean of (1 − s) over the signals available for the pair (2 when
none is); with `same_position` (the default) nodes at different positions never merge. Average
linkage merges clusters while their mean distance is below `threshold`. Clusters of at least
`min_size` nodes become supernodes; a supernode whose layers interleave with another unit's so
that the grouped graph would have a cycle is split by layer until it has none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from tl_clt.errors import InputError
from tl_clt.graph import AttributionGraph, NodeKind
from tl_clt.labels.reader import check_index_for
from tl_clt.supernodes.grouped import GroupedGraph, Supernode

NodeRef = int | tuple[int, int, int] | str
_FAR = 10.0  # distance between nodes that must not merge


class Similarity(NamedTuple):
    """Weights of the similarity signals (0 switches one off)."""

    decoder: float = 1.0
    labels: float = 1.0
    inputs: float = 1.0
    outputs: float = 1.0


DEFAULT_SIMILARITY = Similarity()


def group_supernodes(
    graph: AttributionGraph,
    clt: Any = None,
    index: Any = None,
    *,
    groups: Mapping[str, Sequence[NodeRef]] | None = None,
    auto: bool | None = None,
    threshold: float = 0.5,
    weights: Similarity = DEFAULT_SIMILARITY,
    same_position: bool = True,
    min_size: int = 2,
) -> GroupedGraph:
    """Group `graph`'s feature nodes into supernodes (usually a pruned graph).

    clt: the transcoder (or a `ReplacementModel`) for decoder similarity; index: a
        `FeatureIndex` for label similarity and names. Without either, edge profiles alone.
    groups: manual supernodes, name -> members (node indices, (layer, feature, position)
        triples, or ids "L_F_P" / "L:F@P"). auto: cluster the remaining feature nodes (default:
        only when no `groups` are given).
    threshold: the largest mean distance (1 − cosine) within a cluster.
    """
    check_index_for(index, clt)  # an index of another transcoder would misname supernodes
    if min_size < 2:
        raise InputError(f"min_size must be at least 2, got {min_size}")
    if not 0.0 < threshold <= 2.0:
        raise InputError(f"threshold must lie in (0, 2], got {threshold}")
    manual = [
        Supernode(str(name), tuple(resolve(graph, ref) for ref in refs), auto=False)
        for name, refs in (groups or {}).items()
    ]
    supernodes = list(manual)
    if auto if auto is not None else not manual:
        taken = {i for s in manual for i in s.members}
        free = [i for i in graph.indices(NodeKind.FEATURE) if i not in taken]
        clusters = cluster(graph, free, clt, index, threshold, weights, same_position)
        found = [tuple(sorted(c)) for c in clusters if len(c) >= min_size]
        found = break_cycles(graph, manual, found, min_size)
        names = {s.name for s in manual}
        for members in sorted(found, key=lambda m: (graph.nodes[m[0]].position, m)):
            supernodes.append(Supernode(_unique(name_of(graph, members, index), names), members))
    return GroupedGraph(graph, supernodes)


# ---------------------------------------------------------------------- members
def resolve(graph: AttributionGraph, ref: NodeRef) -> int:
    """The node index that `ref` names (an index, a (layer, feature, position) triple, or a
    feature id "L_F_P" or "L:F@P")."""
    if isinstance(ref, (int, np.integer)) and not isinstance(ref, bool):
        if not 0 <= int(ref) < graph.n_nodes:
            raise InputError(f"node {ref} is not in the graph ({graph.n_nodes} nodes)")
        return int(ref)
    if isinstance(ref, str):
        parts = ref.replace(":", "_").replace("@", "_").split("_")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise InputError(f"cannot read node {ref!r}; write 'LAYER_FEATURE_POS' or 'L:F@P'")
        ref = tuple(int(p) for p in parts)  # type: ignore[assignment]
    if isinstance(ref, tuple) and len(ref) == 3:
        layer, feature, position = (int(x) for x in ref)
        return graph.find(NodeKind.FEATURE, layer=layer, feature=feature, position=position)
    raise InputError(f"cannot read node {ref!r}: give an index, (layer, feature, pos) or 'L_F_P'")


# ---------------------------------------------------------------------- similarity
def _cosine(X: Float[Tensor, "m k"]) -> tuple[Tensor, Tensor]:
    """Cosine similarities of the rows of X, and the mask of pairs where both rows are nonzero."""
    norm = X.norm(dim=1)
    ok = norm > 0
    Y = X / norm.clamp(min=1e-30)[:, None]
    return Y @ Y.T, ok[:, None] & ok[None, :]


def decoder_directions(clt: Any, layers: Sequence[int], features: Sequence[int]) -> Tensor:
    """Each feature's total write to the residual stream, Σ_t W_dec^{l→t}[f], [m, d_model]."""
    clt = getattr(clt, "clt", clt)
    out = []
    with torch.no_grad():
        for layer, feature in zip(layers, features):
            w = sum(clt.W_dec_at(layer, t)[feature] for t in clt.writes_to(layer))
            out.append(w.double().cpu())
    return torch.stack(out)


def label_vectors(index: Any, layers: Sequence[int], features: Sequence[int]) -> Tensor | None:
    """TF-IDF vectors of the features' labels (zero rows for unlabelled features)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = []
    for layer, feature in zip(layers, features):
        lab = index.label(layer, feature)
        texts.append(lab.text if lab is not None else "")
    if not any(t.strip() for t in texts):
        return None
    vec = TfidfVectorizer(token_pattern=r"[^\s\"'(),;]+", lowercase=True)
    return torch.from_numpy(vec.fit_transform(texts).toarray()).double()


def distances(
    graph: AttributionGraph,
    nodes: Sequence[int],
    clt: Any = None,
    index: Any = None,
    weights: Similarity = DEFAULT_SIMILARITY,
    same_position: bool = True,
) -> Float[Tensor, "m m"]:
    """The distance matrix between the feature nodes `nodes` (module docstring)."""
    nodes = list(nodes)
    layers = [graph.nodes[i].layer for i in nodes]
    feats = [graph.nodes[i].feature for i in nodes]
    A = graph.adjacency.double()
    signals: list[tuple[float, Tensor | None]] = [
        (weights.decoder, decoder_directions(clt, layers, feats) if clt is not None else None),
        (weights.labels, label_vectors(index, layers, feats) if index is not None else None),
        (weights.inputs, A[nodes]),
        (weights.outputs, A[:, nodes].T),
    ]
    m = len(nodes)
    total, weight = torch.zeros(m, m, dtype=torch.float64), torch.zeros(m, m, dtype=torch.float64)
    for w, X in signals:
        if w > 0 and X is not None:
            sim, ok = _cosine(X)
            total += w * ok * (1.0 - sim)
            weight += w * ok
    D = torch.where(weight > 0, total / weight.clamp(min=1e-30), torch.full_like(total, 2.0))
    if same_position:
        pos = torch.tensor([graph.nodes[i].position for i in nodes])
        D = torch.where(pos[:, None] == pos[None, :], D, torch.full_like(D, _FAR))
    D.fill_diagonal_(0.0)
    return (D + D.T) / 2


def cluster(
    graph: AttributionGraph,
    nodes: Sequence[int],
    clt: Any,
    index: Any,
    threshold: float,
    weights: Similarity,
    same_position: bool,
) -> list[list[int]]:
    """Average-linkage clusters of `nodes` (node indices) below `threshold`."""
    from sklearn.cluster import AgglomerativeClustering

    nodes = list(nodes)
    if len(nodes) < 2:
        return [[i] for i in nodes]
    D = distances(graph, nodes, clt, index, weights, same_position).numpy()
    labels = AgglomerativeClustering(
        n_clusters=None, metric="precomputed", linkage="average", distance_threshold=threshold
    ).fit_predict(D)
    out: dict[int, list[int]] = {}
    for i, c in zip(nodes, labels.tolist()):
        out.setdefault(c, []).append(i)
    return list(out.values())


# ---------------------------------------------------------------------- cycles and names
def break_cycles(
    graph: AttributionGraph,
    manual: list[Supernode],
    found: list[tuple[int, ...]],
    min_size: int,
) -> list[tuple[int, ...]]:
    """Split automatic groups by layer until the grouped graph has no cycle."""
    from scipy.sparse.csgraph import connected_components

    found = list(found)
    while found:
        grouped = GroupedGraph(graph, manual + [Supernode(str(k), m) for k, m in enumerate(found)])
        links = (grouped.adjacency != 0).numpy()
        n_comp, comp = connected_components(links, directed=True, connection="strong")
        sizes = Counter(comp.tolist())
        cyclic = [k for k in range(len(found)) if sizes[comp[len(manual) + k]] > 1]
        if not cyclic:
            break
        k = max(cyclic, key=lambda k: len(found[k]))
        members = found.pop(k)
        cut = sorted({graph.nodes[i].layer for i in members})
        low = tuple(i for i in members if graph.nodes[i].layer <= cut[(len(cut) - 1) // 2])
        high = tuple(i for i in members if i not in low)
        found += [part for part in (low, high) if len(part) >= min_size]
    return found


def name_of(graph: AttributionGraph, members: Sequence[int], index: Any = None) -> str:
    """The most common label among the members (with an index), else the position's token and
    the members' layers."""
    nodes = [graph.nodes[i] for i in members]
    if index is not None:
        labels = [index.label(n.layer, n.feature) for n in nodes]
        texts = Counter(lab.text for lab in labels if lab is not None and lab.text.strip())
        if texts:
            return texts.most_common(1)[0][0]
    lo, hi = min(n.layer for n in nodes), max(n.layer for n in nodes)
    layers = f"L{lo}" if lo == hi else f"L{lo}-{hi}"
    return f"{nodes[0].shown_token!r} {layers} ×{len(nodes)}"


def _unique(name: str, taken: set[str]) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name} ({k})", k + 1
    taken.add(out)
    return out
