"""Export an attribution graph as the graph JSON that Neuronpedia's viewer and circuit-tracer's
local server read (circuit-tracer's `create_graph_files`): `metadata`, `qParams`, `nodes`, `links`.

Node ids: `"{layer}_{feature}_{pos}"` for features, `"E_{token_id}_{pos}"` for embeddings,
`"{n_layers + 1}_{token_id}_{pos}"` for logits (a logit difference takes the virtual id
`d_vocab + i`), and `"{layer}_error_{pos}"` for error nodes, which therefore never collide with a
feature id (older writers used `"0_{layer}_{pos}"`, the id of feature `layer` at layer 0).
A feature's `feature` field is the Cantor pairing of (layer, feature), as circuit-tracer writes
it (so its server and Neuronpedia decode the right layer and feature), and `metadata` declares
`schema_version` 1.
Supernodes go in `qParams.supernodes` as `[name, node_id, ...]` lists: pass a `GroupedGraph`
(made on this graph or on a pruned graph of it) or `Supernode`s of this graph, whose members the
pruned export leaves out are dropped (and a supernode left empty), or (name, ids) pairs, written
as they are.
With a feature index, each feature node's `clerp` (the viewer's label) is its label. Token
strings are decoded text, never vocabulary symbols: `prompt_tokens` keep their spaces (a
newline is "↵"), a logit's `clerp` shows its token with `visible` (" Paris" is "␣Paris").
The export is a pruned graph as it is (`graph.prune(spec)`; an unpruned graph is pruned with a
`PruneSpec`), never pruned again with other settings; logit ids come from the nodes' token ids.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tl_clt._files import atomic_write_text
from tl_clt.errors import InputError
from tl_clt.graph import AttributionGraph, Node, NodeKind
from tl_clt.prune import PruneSpec
from tl_clt.tokenization import visible

INDEX_FILE = "graph-metadata.json"
#: The graph-file schema the viewer's files declare (circuit-tracer writes 1).
SCHEMA_VERSION = 1
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
    return f"{n_layers + 1}_{logit_vocab_id(node, virtual_id)}_{node.position}"


def logit_vocab_id(node: Node, virtual_id: int | None) -> int | None:
    """A logit node's vocabulary id in the viewer: its token id, or for a logit difference
    (which has two) the virtual id `virtual_id`."""
    if node.token_id is None or node.is_difference:
        return virtual_id
    return node.token_id


def feature_number(layer: int, feature: int) -> int:
    """A feature's one-number id in the viewer's `feature` field: the Cantor pairing of
    (layer, feature), unique for any sizes and what circuit-tracer's graph files hold."""
    return (layer + feature) * (layer + feature + 1) // 2 + feature


def feature_fields(layer: int, feature: int) -> dict[str, Any]:
    """The viewer's `feature`, `layer` and `jsNodeId` of a feature node."""
    return {"feature": feature_number(layer, feature), "layer": str(layer),
            "jsNodeId": f"{layer}_{feature}-0"}  # fmt: skip


def _virtual_ids(graph: AttributionGraph) -> dict[int, int]:
    """node index -> `d_vocab + k` for the k-th logit node (used by logit differences)."""
    vocab = graph.info.d_vocab or 0
    return {i: vocab + k for k, i in enumerate(graph.indices(NodeKind.LOGIT))}


def node_ids(graph: AttributionGraph) -> list[str]:
    """Every node's viewer id, in node-table order (unique within a graph)."""
    virtual = _virtual_ids(graph)
    return [node_id(n, graph.info.n_layers, virtual.get(i)) for i, n in enumerate(graph.nodes)]


def _node_record(
    graph: AttributionGraph,
    i: int,
    nid: str,
    influence: float,
    top: int,
    index: Any = None,
    virtual_id: int | None = None,
) -> dict[str, Any]:
    n, L = graph.nodes[i], graph.info.n_layers
    record: dict[str, Any] = {
        "node_id": nid, "feature": 0, "layer": "", "ctx_idx": n.position,
        "feature_type": FEATURE_TYPES[n.kind], "token_prob": 0.0, "is_target_logit": False,
        "run_idx": 0, "reverse_ctx_idx": 0, "jsNodeId": "", "clerp": "",
        "influence": influence, "activation": None,
    }  # fmt: skip
    if n.kind is NodeKind.FEATURE:
        record.update(feature_fields(n.layer, n.feature), activation=n.activation)
        label = index.label(n.layer, n.feature) if index is not None else None
        if label is not None:
            record["clerp"] = label.text
    elif n.kind is NodeKind.ERROR:
        record.update(feature=-1, layer=str(n.layer), jsNodeId=f"{n.layer}_error_{n.position}-0")
    elif n.kind is NodeKind.EMBEDDING:
        record.update(feature=n.position, layer="E", jsNodeId=f"E_{n.token_id}-{n.position}")
    else:
        vocab = logit_vocab_id(n, virtual_id)
        p = n.probability if n.probability is not None else 0.0
        record.update(feature=vocab, layer=str(L + 1), token_prob=p, is_target_logit=i == top,
                      jsNodeId=f"L_{vocab}-{n.position}", influence=None,
                      clerp=f'Output "{n.shown_token}" (p={p:.3f})')  # fmt: skip
    return record


def to_neuronpedia(
    graph: AttributionGraph,
    slug: str,
    scan: str | None = None,
    prune: PruneSpec | None = None,
    supernodes: Any = (),
    pinned_ids: Sequence[str] = (),
    index: Any = None,
) -> dict[str, Any]:
    """The viewer's JSON for a pruned graph (`graph.prune(...)`), exactly its nodes and edges;
    an unpruned graph is pruned here with `prune` (default `PruneSpec()`), and a pruned graph
    is never pruned again (`prune`, if given, must be its own spec). Each node's `influence`
    is its cumulative influence in the graph it was pruned from, when that is at hand (a
    pruned graph read from files: in itself). `scan` names the model on Neuronpedia (default:
    the graph's model name); `supernodes` and `index` as in the module docstring."""
    pruned = pruned_graph(graph, prune)
    spec = pruned.info.prune_spec
    full = pruned.parent if pruned.parent is not None else pruned
    cumulative = full.influence().cumulative[pruned.positions_in(full)]
    ids = node_ids(pruned)
    virtual = _virtual_ids(pruned)
    logits = pruned.indices(NodeKind.LOGIT)
    top = max(logits, key=lambda i: pruned.nodes[i].weight) if logits else -1
    links = [
        {"source": ids[j], "target": ids[i], "weight": float(pruned.adjacency[i, j])}
        for i, j in pruned.adjacency.nonzero().tolist()
    ]
    linked = {x for link in links for x in (link["source"], link["target"])}
    nodes = [
        _node_record(pruned, i, ids[i], float(cumulative[i]), top, index, virtual.get(i))
        for i in range(pruned.n_nodes)
        if ids[i] in linked or pruned.nodes[i].kind in (NodeKind.EMBEDDING, NodeKind.LOGIT)
    ]
    metadata = {
        "slug": slug,
        "scan": scan or pruned.info.model,
        "transcoder_list": [],
        "prompt_tokens": [
            visible(pruned.nodes[i].token, spaces=False) for i in pruned.indices(NodeKind.EMBEDDING)
        ],
        "prompt": pruned.prompt,
        "node_threshold": spec.node_threshold,
        "schema_version": SCHEMA_VERSION,
    }
    qparams = {
        "pinnedIds": list(pinned_ids),
        "supernodes": supernode_lists(graph, supernodes, {n["node_id"] for n in nodes}),
        "linkType": "both",
        "clickedId": "",
        "sg_pos": "",
    }
    return {"metadata": metadata, "qParams": qparams, "nodes": nodes, "links": links}


def pruned_graph(graph: AttributionGraph, spec: PruneSpec | None = None) -> AttributionGraph:
    """The pruned graph a page or export shows: `graph` itself when it is pruned (its spec,
    `info.prune_spec`, must then equal `spec` when one is given: it is never re-pruned with
    other settings), otherwise `graph.prune(spec or PruneSpec())`."""
    if graph.original_index is None:
        return graph.prune(PruneSpec() if spec is None else spec)
    own = graph.info.prune_spec
    if spec is not None and spec != own:
        raise InputError(
            f"this graph was pruned with {own}, not {spec}: pass the unpruned graph to prune it "
            "with other settings, or leave the spec out"
        )
    return graph


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
