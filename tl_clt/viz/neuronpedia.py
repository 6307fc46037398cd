"""Export an attribution graph as the graph JSON that Neuronpedia's viewer and circuit-tracer's
local server read (circuit-tracer's `create_graph_files`): `metadata`, `qParams`, `nodes`, `links`.

Node ids: `"{layer}_{feature}_{pos}"` for features, `"E_{token_id}_{pos}"` for embeddings,
`"{n_layers + 1}_{token_id}_{pos}"` for logits (a logit difference takes the virtual id
`d_vocab + i`), and `"{layer}_error_{pos}"` for error nodes, which therefore never collide with a
feature id (older writers used `"0_{layer}_{pos}"`, the id of feature `layer` at layer 0).
Supernodes go in `qParams.supernodes` as `[name, node_id, ...]` lists: pass a `GroupedGraph`
(made on this graph or on a pruned graph of it) or `Supernode`s of this graph, whose members the
pruned export leaves out are dropped (and a supernode left empty), or (name, ids) pairs, written
as they are.
With a feature index, each feature node's `clerp` (the viewer's label) is its label.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tl_clt._files import atomic_write_text
from tl_clt.errors import InputError
from tl_clt.graph import AttributionGraph, Node, NodeKind

INDEX_FILE = "graph-metadata.json"
FEATURE_TYPES = {
    NodeKind.FEATURE: "cross layer transcoder",
    NodeKind.ERROR: "mlp reconstruction error",
    NodeKind.EMBEDDING: "embedding",
    NodeKind.LOGIT: "logit",
}


def node_id(node: Node, n_layers: int, virtual_id: int | None = None) -> str:
    """The viewer's id of a node (see the module docstring)."""
    if node.kind is NodeKind.FEATURE:
        return f"{node.layer}_{node.feature}_{node.position}"
    if node.kind is NodeKind.ERROR:
        return f"{node.layer}_error_{node.position}"
    if node.kind is NodeKind.EMBEDDING:
        return f"E_{node.token_id}_{node.position}"
    vocab = node.token_id if node.token_id is not None else virtual_id
    return f"{n_layers + 1}_{vocab}_{node.position}"


def node_ids(graph: AttributionGraph) -> list[str]:
    """Every node's viewer id, in node-table order (unique within a graph)."""
    vocab = graph.info.d_vocab or 0
    logits = {i: k for k, i in enumerate(graph.indices(NodeKind.LOGIT))}
    return [
        node_id(n, graph.info.n_layers, vocab + logits.get(i, 0)) for i, n in enumerate(graph.nodes)
    ]


def _node_record(
    graph: AttributionGraph, i: int, nid: str, influence: float, top: int, index: Any = None
) -> dict[str, Any]:
    n, L = graph.nodes[i], graph.info.n_layers
    digits = 10 ** math.ceil(math.log10(max(graph.info.n_features, 2)))
    record: dict[str, Any] = {
        "node_id": nid, "feature": 0, "layer": "", "ctx_idx": n.position,
        "feature_type": FEATURE_TYPES[n.kind], "token_prob": 0.0, "is_target_logit": False,
        "run_idx": 0, "reverse_ctx_idx": 0, "jsNodeId": "", "clerp": "",
        "influence": influence, "activation": None,
    }  # fmt: skip
    if n.kind is NodeKind.FEATURE:
        record.update(feature=n.feature + digits * n.layer, layer=str(n.layer),
                      jsNodeId=f"{n.layer}_{n.feature}-0", activation=n.activation)  # fmt: skip
        label = index.label(n.layer, n.feature) if index is not None else None
        if label is not None:
            record["clerp"] = label.text
    elif n.kind is NodeKind.ERROR:
        record.update(feature=-1, layer=str(n.layer), jsNodeId=f"{n.layer}_error_{n.position}-0")
    elif n.kind is NodeKind.EMBEDDING:
        record.update(feature=n.position, layer="E", jsNodeId=f"E_{n.token_id}-{n.position}")
    else:
        vocab = int(nid.split("_")[1])
        p = n.probability if n.probability is not None else 0.0
        record.update(feature=vocab, layer=str(L + 1), token_prob=p, is_target_logit=i == top,
                      jsNodeId=f"L_{vocab}-{n.position}", influence=None,
                      clerp=f'Output "{n.token}" (p={p:.3f})')  # fmt: skip
    return record


def to_neuronpedia(
    graph: AttributionGraph,
    slug: str,
    scan: str | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    supernodes: Any = (),
    pinned_ids: Sequence[str] = (),
    index: Any = None,
) -> dict[str, Any]:
    """The viewer's JSON for `graph` (an unpruned graph: it is pruned here with the given
    thresholds); `scan` names the model on Neuronpedia (default: the graph's model name);
    `supernodes` and `index` as in the module docstring."""
    if graph.original_index is not None:
        raise InputError("pass the unpruned graph; to_neuronpedia prunes it with the thresholds")
    cumulative = graph.influence().cumulative
    pruned = graph.prune(node_threshold, edge_threshold)
    kept = pruned.original_index.tolist()
    ids = node_ids(graph)
    logits = graph.indices(NodeKind.LOGIT)
    top = max(logits, key=lambda i: graph.nodes[i].weight) if logits else -1
    links = [
        {"source": ids[kept[j]], "target": ids[kept[i]], "weight": float(pruned.adjacency[i, j])}
        for i, j in pruned.adjacency.nonzero().tolist()
    ]
    linked = {x for link in links for x in (link["source"], link["target"])}
    nodes = [
        _node_record(graph, i, ids[i], float(cumulative[i]), top, index)
        for i in kept
        if ids[i] in linked or graph.nodes[i].kind in (NodeKind.EMBEDDING, NodeKind.LOGIT)
    ]
    metadata = {
        "slug": slug,
        "scan": scan or graph.info.model,
        "transcoder_list": [],
        "prompt_tokens": [graph.nodes[i].token for i in graph.indices(NodeKind.EMBEDDING)],
        "prompt": graph.prompt,
        "node_threshold": node_threshold,
    }
    qparams = {
        "pinnedIds": list(pinned_ids),
        "supernodes": supernode_lists(graph, supernodes, {n["node_id"] for n in nodes}),
        "linkType": "both",
        "clickedId": "",
        "sg_pos": "",
    }
    return {"metadata": metadata, "qParams": qparams, "nodes": nodes, "links": links}


def supernode_lists(graph: AttributionGraph, supernodes: Any, present: set[str]) -> list[list[str]]:
    """`[name, node_id, ...]` for each supernode: (name, ids) pairs as they are; a
    `GroupedGraph` or `Supernode`s with the members in `present` only (empty ones dropped)."""
    from tl_clt.supernodes import GroupedGraph, Supernode

    if isinstance(supernodes, GroupedGraph):
        ids = node_ids(supernodes.graph)
        groups = [(s.name, [ids[i] for i in s.members]) for s in supernodes.supernodes]
    else:
        ids = node_ids(graph)
        groups = [
            (s.name, [ids[i] for i in s.members]) for s in supernodes if isinstance(s, Supernode)
        ]
        if not groups:
            return [[str(name), *map(str, members)] for name, members in supernodes]
    out = []
    for name, members in groups:
        kept = [m for m in members if m in present]
        if kept:
            out.append([name, *kept])
    return out


def write_neuronpedia(
    graph: AttributionGraph, directory: str | os.PathLike, slug: str, **kwargs: Any
) -> Path:
    """Write `{slug}.json` into `directory` and add (or replace) its entry in the directory's
    `graph-metadata.json` index, which circuit-tracer's local server lists; atomic writes."""
    directory = Path(directory)
    data = to_neuronpedia(graph, slug, **kwargs)
    path = directory / f"{slug}.json"
    atomic_write_text(path, json.dumps(data))
    index_path = directory / INDEX_FILE
    try:
        index = json.loads(index_path.read_text()) if index_path.is_file() else {"graphs": []}
        graphs = [g for g in index.get("graphs", []) if g.get("slug") != slug]
    except (OSError, json.JSONDecodeError, AttributeError):
        graphs = []
    atomic_write_text(index_path, json.dumps({"graphs": [*graphs, data["metadata"]]}, indent=1))
    return path
