"""The pruning contract shared by Python and the graph page: `data/prune_contract.json` holds
small attribution-shaped graphs and, for each (node threshold, edge threshold,
rank_always_kept), the nodes and edges pruning keeps. `graph.prune(PruneSpec(...))` and the
page's JavaScript (`graph_prune.js`, in headless Chromium) must both keep exactly those.

Regenerate the fixture (only when the algorithm is meant to change) with
`python tests/test_prune_contract.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from browser import Browser

from tl_clt import prune as P
from tl_clt.graph import AttributionGraph, GraphInfo, Node, NodeKind
from tl_clt.viz.page import static

FIXTURE = Path(__file__).parent / "data" / "prune_contract.json"
KINDS = [NodeKind.EMBEDDING, NodeKind.FEATURE, NodeKind.ERROR, NodeKind.LOGIT]  # page codes
CASES = [(0.5, 0.9, True), (0.5, 0.9, False), (0.8, 0.98, True), (0.8, 0.98, False),
         (0.95, 0.99, False), (0.3, 0.8, False), (0.3, 0.8, True)]  # fmt: skip


def _random_graph(seed: int, n_pos: int = 5, n_layers: int = 3, per_layer: int = 6) -> dict:
    """Embeddings, features by layer, errors, logits; edges from lower to higher layers and
    into the logits, signed random weights, embeddings and errors without inputs."""
    gen = torch.Generator().manual_seed(seed)
    kind = [0] * n_pos + [1] * (n_layers * per_layer) + [2] * (n_layers * 2) + [3] * 3
    layer = [-1] * n_pos + [k // per_layer for k in range(n_layers * per_layer)]
    layer += [k // 2 for k in range(n_layers * 2)] + [n_layers] * 3
    n = len(kind)
    probs = torch.rand(3, generator=gen) + 0.05
    wt = [0.0] * (n - 3) + (probs / probs.sum() * 0.9).tolist()
    s, t, w = [], [], []
    for i in range(n):  # target
        if kind[i] in (0, 2):
            continue
        for j in range(n):  # source
            earlier = kind[j] == 0 or (kind[j] in (1, 2) and layer[j] < layer[i])
            if kind[j] != 3 and earlier and float(torch.rand(1, generator=gen)) < 0.6:
                s.append(j)
                t.append(i)
                w.append(round(float(torch.randn(1, generator=gen)) * 10 ** float(torch.rand(1, generator=gen)), 6))  # fmt: skip
    return {"kind": kind, "wt": wt, "s": s, "t": t, "w": w}


def _graph(g: dict) -> AttributionGraph:
    n = len(g["kind"])
    A = torch.zeros(n, n, dtype=torch.float64)
    A[g["t"], g["s"]] = torch.tensor(g["w"], dtype=torch.float64)
    nodes = [
        Node(KINDS[k], 0, probability=g["wt"][i] if k == 3 else None, token_id=i if k == 3 else None)
        for i, k in enumerate(g["kind"])
    ]  # fmt: skip
    info = GraphInfo(
        model="contract", n_layers=3, transcoder="-", n_features=0, n_active_features=0
    )
    return AttributionGraph("", torch.zeros(1, dtype=torch.long), nodes, A, info)


def _kept(graph: AttributionGraph, spec: P.PruneSpec, g: dict) -> tuple[list[int], list[int]]:
    pruned = graph.prune(spec)
    nodes = torch.zeros(graph.n_nodes, dtype=torch.int)
    nodes[pruned.original_index] = 1
    kept = torch.zeros(graph.n_nodes, graph.n_nodes, dtype=torch.bool)
    idx = pruned.original_index
    kept[idx[:, None], idx[None, :]] = pruned.adjacency != 0
    return nodes.tolist(), [int(kept[t, s]) for s, t in zip(g["s"], g["t"])]


def make_fixture() -> dict:
    graphs, cases = [], []
    for seed in (0, 1, 2):
        g = _random_graph(seed)
        graphs.append(g)
        for nt, et, rank in CASES:
            nodes, edges = _kept(_graph(g), P.PruneSpec(nt, et, rank), g)
            cases.append({"graph": len(graphs) - 1, "node_threshold": nt, "edge_threshold": et,
                          "rank_always_kept": rank, "nodes": nodes, "edges": edges})  # fmt: skip
    return {"graphs": graphs, "cases": cases}


@pytest.fixture(scope="module")
def contract() -> dict:
    return json.loads(FIXTURE.read_text())


def test_the_fixture_tells_the_flag_apart(contract):
    """The rank_always_kept=False cases keep other nodes than the default ones somewhere, so
    they pin the flag."""
    by = {(c["graph"], c["node_threshold"], c["rank_always_kept"]): c["nodes"] for c in contract["cases"]}  # fmt: skip
    assert any(by[(g, nt, True)] != by[(g, nt, False)] for g, nt, _ in by if (g, nt, True) in by)


def test_graph_prune_keeps_the_fixture_masks_and_records_its_spec(contract, tmp_path):
    for case in contract["cases"]:
        g = contract["graphs"][case["graph"]]
        spec = P.PruneSpec(case["node_threshold"], case["edge_threshold"], case["rank_always_kept"])
        graph = _graph(g)
        assert _kept(graph, spec, g) == (case["nodes"], case["edges"]), case
        pruned = graph.prune(spec)
        assert pruned.info.prune_spec == spec and pruned.parent is graph
        pruned.save(tmp_path / "p")
        assert AttributionGraph.load(tmp_path / "p").info.prune_spec == spec


def test_the_pages_javascript_keeps_the_fixture_masks(contract, tmp_path):
    page = tmp_path / "contract.html"
    data = json.dumps(contract).replace("</", "<\\/")
    page.write_text(f"<!DOCTYPE html><html><body><script>{static('graph_prune.js')}</script>"
                    f"<script>var CONTRACT = {data};</script></body></html>")  # fmt: skip
    with Browser() as b:
        b.open(page)
        got = b.eval(
            "CONTRACT.cases.map(function (c) { var g = CONTRACT.graphs[c.graph];"
            " var m = TLPrune.graph(g.kind, g.wt, g.s, g.t, g.w, c.rank_always_kept);"
            " var v = TLPrune.prune(m, c.node_threshold, c.edge_threshold);"
            " return [Array.from(v.nodes), Array.from(v.edges)]; })"
        )
    for case, (nodes, edges) in zip(contract["cases"], got):
        assert (nodes, edges) == (case["nodes"], case["edges"]), {
            k: case[k] for k in ("graph", "node_threshold", "edge_threshold", "rank_always_kept")
        }


if __name__ == "__main__":
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(make_fixture(), separators=(",", ":")) + "\n")
    print(f"wrote {FIXTURE}")
