"""Supernodes against known answers: grouped edges equal the members' edges summed by a
brute-force loop; influence of the grouped graph equals wᵀ((I − Ĝ)⁻¹ − I) by matrix inverse;
linear predictions worked out by hand on a chain; clustering recovers groups built to be
identical (hand-built profiles, and duplicated features of a real transcoder); and on a tiny
random model, the grouped graph's predicted change of the top logit when a group is ablated or
scaled equals the change a real intervention measures, in the linear regime."""

from __future__ import annotations

import itertools
import tempfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import random_clt

from tl_clt import (
    InputError,
    LogitDifference,
    NodeKind,
    ReplacementModel,
    attribute,
    group_supernodes,
)
from tl_clt.graph import AttributionGraph, GraphInfo, Node
from tl_clt.lens import from_hf
from tl_clt.lens.build import tiny_hf_model
from tl_clt.supernodes import GroupedGraph, Similarity, Supernode, resolve, validate_supernodes
from tl_clt.supernodes.cluster import break_cycles
from tl_clt.tokenization import SPECIALS, word_level_tokenizer
from tl_clt.viz.neuronpedia import node_ids, to_neuronpedia

E, F, R, T = NodeKind.EMBEDDING, NodeKind.FEATURE, NodeKind.ERROR, NodeKind.LOGIT


def hand_graph(nodes: list[Node], edges: dict[tuple[int, int], float]) -> AttributionGraph:
    A = torch.zeros(len(nodes), len(nodes))
    for (t, s), w in edges.items():
        A[t, s] = w
    info = GraphInfo("hand", 3, "hand", 8, sum(n.kind is F for n in nodes))
    return AttributionGraph("a b c", torch.arange(3), nodes, A, info)


def random_dag_graph(seed: int = 0) -> AttributionGraph:
    """Embeddings at 3 positions, features at layers 0-2, two errors, two logits; random edges
    from lower to higher layers (and to the logits)."""
    gen = torch.Generator().manual_seed(seed)
    nodes = [Node(E, p, token=f"t{p}") for p in range(3)]
    nodes += [Node(F, p, layer, f, activation=1.0 + float(torch.rand(1, generator=gen)))
              for layer in range(3) for p in (1, 2) for f in range(2)]  # fmt: skip
    nodes += [Node(R, 2, layer, activation=0.5) for layer in (0, 1)]
    nodes += [Node(T, 2, token_id=7, token="x", probability=0.7),
              Node(T, 2, token_id=8, token="y", probability=0.2)]  # fmt: skip
    rank = {E: -1, R: None, T: 9}
    edges = {}
    for t, s in itertools.product(range(len(nodes)), repeat=2):
        nt, ns = nodes[t], nodes[s]
        lt = rank.get(nt.kind, nt.layer) if nt.kind is not F else nt.layer
        ls = ns.layer if ns.kind in (F, R) else rank[ns.kind]
        if nt.kind in (E, R) or ns.kind is T or ls is None or lt is None or ls >= lt:
            continue
        if ns.position <= nt.position and torch.rand(1, generator=gen) < 0.8:
            edges[(t, s)] = float(torch.randn(1, generator=gen))
    return hand_graph(nodes, edges)


def test_grouped_edges_are_the_members_edges_summed():
    g = random_dag_graph()
    feats = g.indices(F)
    groups = [Supernode("a", (feats[0], feats[1], feats[4])), Supernode("b", (feats[6], feats[9]))]
    grouped = GroupedGraph(g, groups)
    units = grouped.units
    assert units[:2] == [groups[0].members, groups[1].members] and len(units) == g.n_nodes - 3
    A = g.adjacency.double()
    for u, v in itertools.product(range(len(units)), repeat=2):
        total = 0.0
        for i in units[u]:
            for j in units[v]:
                total += float(A[i, j])
        if u == v:
            assert grouped.adjacency[u, u] == 0
            assert grouped.internal[u].item() == pytest.approx(total, abs=1e-6)
        else:
            assert grouped.adjacency[u, v].item() == pytest.approx(total, abs=1e-6)
    assert grouped.internal[0] != 0  # feats[0] (layer 0) feeds feats[4] (layer 1)
    acts = [sum(g.nodes[i].activation or 0.0 for i in u) for u in units]
    torch.testing.assert_close(grouped.activation, torch.tensor(acts, dtype=torch.float64))
    # influence: w ((I - Ĝ)^-1 - I) by matrix inverse
    G = grouped.adjacency.double().numpy()
    Ghat = np.abs(G) / np.maximum(np.abs(G).sum(1, keepdims=True), 1e-30)
    w = grouped.logit_weights.double().numpy()
    expected = w @ (np.linalg.inv(np.eye(len(units)) - Ghat) - np.eye(len(units)))
    np.testing.assert_allclose(grouped.influence().numpy(), expected, rtol=1e-5, atol=1e-7)
    # every singleton grouping is the node graph itself
    alone = GroupedGraph(g, [])
    torch.testing.assert_close(alone.adjacency, g.adjacency)
    torch.testing.assert_close(alone.influence(), g.influence().influence)


def test_linear_predictions_on_a_hand_worked_chain():
    """emb -> f1 (a=2), f1' (a=1, same role) -> f2 (a=4) -> logit, and f1, f1' -> logit."""
    nodes = [Node(E, 1, token="a"), Node(F, 1, 0, 0, activation=2.0),
             Node(F, 1, 0, 1, activation=1.0), Node(F, 1, 1, 0, activation=4.0),
             Node(T, 1, token_id=0, token="z", probability=1.0)]  # fmt: skip
    edges = {(1, 0): 2.0, (2, 0): 1.0, (3, 1): 2.0, (3, 2): 1.0, (4, 3): 8.0, (4, 1): 1.0,
             (4, 2): 0.5}  # fmt: skip
    g = hand_graph(nodes, edges)
    grouped = group_supernodes(g, groups={"f1s": [1, (0, 1, 1)]})
    u, t = grouped.supernode("f1s"), int(grouped.unit_of[4])
    # ablate both f1s: f2 loses 2 + 1 = 3 of its 4, the logit loses 1.5 directly and 3 * 8/4 = 6
    assert grouped.effect(u, t) == pytest.approx(-7.5)
    assert grouped.node_effect(u, t) == pytest.approx(-7.5)
    assert grouped.effect(u, t, scale=0.5) == pytest.approx(-3.75)  # linear in (scale - 1)
    assert grouped.effect(u, int(grouped.unit_of[3])) == pytest.approx(-3.0)
    # ablating f2 alone: the logit loses its edge, 8
    assert grouped.effect(int(grouped.unit_of[3]), t) == pytest.approx(-8.0)


def test_manual_groups_refer_to_nodes_in_several_ways_and_bad_ones_are_refused():
    g = random_dag_graph()
    f = g.indices(F)
    n = g.nodes[f[2]]
    assert resolve(g, f[2]) == resolve(g, (n.layer, n.feature, n.position)) == f[2]
    assert resolve(g, f"{n.layer}_{n.feature}_{n.position}") == f[2]
    assert resolve(g, f"{n.layer}:{n.feature}@{n.position}") == f[2]
    with pytest.raises(InputError, match="not a feature"):
        group_supernodes(g, groups={"x": [0, f[0]]})
    with pytest.raises(InputError, match="shares nodes"):
        group_supernodes(g, groups={"x": [f[0], f[1]], "y": [f[1], f[2]]})
    with pytest.raises(InputError, match="0 feature nodes match"):
        group_supernodes(g, groups={"x": [(9, 9, 9)]})
    with pytest.raises(InputError, match="cannot read"):
        group_supernodes(g, groups={"x": ["nine"]})
    grouped = group_supernodes(g, groups={"x": f[:2]}, auto=True, threshold=0.01)
    assert grouped.supernodes[0] == Supernode("x", tuple(f[:2]), auto=False)


def test_clustering_recovers_features_built_to_play_the_same_role():
    """Two sets of features at one position with identical (scaled) edge profiles, one set at
    another position with the first set's profile: clusters by role, split by position."""
    nodes = [Node(E, p, token=f"t{p}") for p in range(3)]
    nodes += [Node(F, 1, 0, f, activation=1.0) for f in range(6)]  # roles A A A B B B
    nodes += [Node(F, 2, 0, f, activation=1.0) for f in range(2)]  # role A at position 2
    nodes += [Node(T, 2, token_id=1, token="x", probability=0.6),
              Node(T, 2, token_id=2, token="y", probability=0.4)]  # fmt: skip
    roles = {3: "A", 4: "A", 5: "A", 6: "B", 7: "B", 8: "B", 9: "A", 10: "A"}
    edges = {}
    for k, (i, role) in enumerate(roles.items()):
        c = 1.0 + 0.3 * k
        edges[(i, 0)] = c * (1.0 if role == "A" else -0.5)
        edges[(i, 1)] = c * (0.5 if role == "A" else 1.0)
        edges[(i, 2)] = c * (0.2 if role == "A" else 0.1)
        edges[(11, i)] = 0.7 if role == "A" else -0.3
        edges[(12, i)] = -0.2 if role == "A" else 0.9
    g = hand_graph(nodes, edges)
    grouped = group_supernodes(g, threshold=0.05)
    assert sorted(s.members for s in grouped.supernodes) == [(3, 4, 5), (6, 7, 8), (9, 10)]
    assert all(s.auto for s in grouped.supernodes)
    assert len(group_supernodes(g, threshold=0.05, same_position=False).supernodes) == 2
    # labels: a stand-in index whose labels split role A in two and name the groups
    labels = {(0, f): ("texas" if f < 2 else "dallas") for f in range(6)}
    index = SimpleNamespace(label=lambda layer, f: SimpleNamespace(text=labels.get((layer, f), "")))
    named = group_supernodes(g, index=index, threshold=0.3, weights=Similarity(0, 4.0, 1.0, 1.0))
    assert {s.name for s in named.supernodes} >= {"texas"}
    assert [s.members for s in named.supernodes if s.name == "texas"] == [(3, 4)]


def test_groups_whose_layers_interleave_are_split_until_the_graph_has_no_cycle():
    nodes = [Node(E, 1, token="a"), Node(F, 1, 0, 0, activation=1.0),
             Node(F, 1, 1, 0, activation=1.0), Node(F, 1, 2, 0, activation=1.0),
             Node(F, 1, 2, 1, activation=1.0), Node(T, 1, token_id=0, token="z", probability=1.0)]  # fmt: skip
    g = hand_graph(nodes, {(1, 0): 1.0, (2, 1): 1.0, (3, 2): 1.0, (4, 2): 1.0, (5, 3): 1.0,
                           (5, 4): 1.0})  # fmt: skip
    # {L0, L2, L2'} around L1 is a cycle in the grouped graph: split into L0 alone, {L2, L2'}
    assert break_cycles(g, [], [(1, 3, 4)], min_size=2) == [(3, 4)]
    assert break_cycles(g, [], [(3, 4)], min_size=2) == [(3, 4)]
    cyclic = GroupedGraph(g, [Supernode("loop", (1, 3))])  # a manual cycle still has influence
    assert torch.isfinite(cyclic.influence()).all()


# ---------------------------------------------------------------------- a real model
@pytest.fixture(scope="module")
def duplicated():
    """A float64 tiny model and a transcoder whose features H..2H-1 copy features 0..H-1 with
    encoders scaled by c and decoders by 1/c: each copy's activation is c times the original's
    and it writes the same vector, so each pair plays exactly one role. Its JumpReLU
    thresholds lie far below every pre-activation, so every feature is active and stays active
    whatever is ablated: the constrained model is linear, the regime where the predictions are
    exact."""
    hf = tiny_hf_model("gpt2", n_layers=3).double()
    words = [f"w{i}" for i in range(hf.config.vocab_size - len(SPECIALS))]
    lens = from_hf(hf, word_level_tokenizer(words, tempfile.mkdtemp()), name="f64-dup")
    H = 8
    clt = random_clt(3, lens.d_model, n_features=2 * H, model=lens.identity(), dtype="float64",
                     activation="jumprelu")  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        clt.threshold.fill_(-1e4)
        for layer in range(3):
            c = 0.5 + torch.rand(H, generator=gen, dtype=torch.float64)
            clt.W_enc[layer][:, H:] = clt.W_enc[layer][:, :H] * c
            clt.b_enc[layer][H:] = clt.b_enc[layer][:H] * c
            clt.W_dec[layer][H:] = clt.W_dec[layer][:H] / c[:, None, None]
    rm = ReplacementModel(lens, clt)
    return rm, attribute(rm, "w3 w1 w4 w1 w5 w9 w2", batch_size=64), H


def test_clustering_a_real_transcoder_finds_the_duplicated_features(duplicated):
    rm, graph, H = duplicated
    grouped = group_supernodes(graph, rm, threshold=0.01)
    pairs = sorted(tuple(sorted((graph.nodes[i].layer, graph.nodes[i].feature % H,
                                 graph.nodes[i].position) for i in s.members))
                   for s in grouped.supernodes)  # fmt: skip
    expected = sorted({((n.layer, n.feature % H, n.position),) * 2
                       for n in graph.nodes if n.kind is F})  # fmt: skip
    assert pairs == expected and len(pairs) == 3 * H * 7


def _sample(grouped, graph, k=24):
    """Supernodes at the last position (they reach the logit most) and a few earlier ones."""
    last = graph.nodes[graph.indices(T)[0]].position
    names = [s.name for s in grouped.supernodes if graph.nodes[s.members[0]].position == last]
    return names[:k] + [s.name for s in grouped.supernodes if s.name not in names][:6]


def test_grouped_graph_predicts_group_ablations(duplicated):
    rm, graph, _ = duplicated
    grouped = group_supernodes(graph, rm, threshold=0.01)
    names = _sample(grouped, graph)
    # direct effects (other features held): the summed edges, exactly, in any regime
    direct = validate_supernodes(rm, grouped, how="direct", supernodes=names)
    meas = torch.tensor([c.measured for c in direct.checks])
    torch.testing.assert_close(torch.tensor([c.predicted for c in direct.checks]), meas,
                               rtol=1e-6, atol=1e-9 * float(meas.abs().max()))  # fmt: skip
    assert meas.abs().max() > 1e-2
    # total effects, every feature free to respond: the grouped graph's prediction
    total = validate_supernodes(rm, grouped, supernodes=names)
    assert all(c.linear for c in total.checks)
    meas = torch.tensor([c.measured for c in total.checks])
    assert (meas - torch.tensor([c.measured for c in direct.checks])).abs().max() > 1e-2
    top = float(meas.abs().max())
    for c in total.checks:
        assert c.predicted == pytest.approx(c.measured, abs=1e-6 * top)
        assert c.node_predicted == pytest.approx(c.measured, abs=1e-6 * top)
    assert total.correlation > 0.99999 and total.relative_error < 1e-5
    half = validate_supernodes(rm, grouped, scale=0.5, supernodes=names[:5])  # linear in scale
    for h, c in zip(half.checks, total.checks):
        assert h.measured == pytest.approx(c.measured / 2, abs=1e-6 * top)
    assert "| supernode |" in total.table() and "correlation" in str(total)


def test_groups_that_do_not_move_together_are_predicted_by_the_node_graph_only(duplicated):
    """Loose groups of unrelated features: the node graph's prediction still equals the
    measurement; the grouped graph's assumes the members move together, and misses."""
    rm, graph, _ = duplicated
    grouped = group_supernodes(graph, rm, threshold=1.0)
    assert max(len(s.members) for s in grouped.supernodes) > 2
    v = validate_supernodes(rm, grouped, supernodes=_sample(grouped, graph, 12))
    top = max(abs(c.measured) for c in v.checks)
    for c in v.checks:
        assert c.node_predicted == pytest.approx(c.measured, abs=1e-6 * top)
    assert v.node_relative_error < 1e-5 and v.relative_error > 1e-2


def test_a_logit_difference_target_is_checked_too(duplicated):
    rm, _, _ = duplicated
    graph = attribute(rm, "w3 w1 w4 w1 w5 w9 w2", targets=LogitDifference("w7", "w8"))
    grouped = group_supernodes(graph, rm, threshold=0.01)
    names = _sample(grouped, graph, 6)
    for how in ("direct", "total"):
        v = validate_supernodes(rm, grouped, how=how, supernodes=names)
        assert v.target == "w7 - w8"
        top = max(abs(c.measured) for c in v.checks)
        assert top > 1e-3
        for c in v.checks:
            assert c.predicted == pytest.approx(c.measured, abs=1e-6 * top)


def test_neuronpedia_json_carries_the_supernodes(duplicated):
    rm, graph, _ = duplicated
    pruned = graph.prune()
    grouped = group_supernodes(pruned, rm, threshold=0.01)
    data = to_neuronpedia(graph, "dup", supernodes=grouped)
    present = {n["node_id"] for n in data["nodes"]}
    lists = data["qParams"]["supernodes"]
    ids = node_ids(pruned)
    expected = [[s.name, *[ids[i] for i in s.members]] for s in grouped.supernodes]
    assert lists == [x for x in expected if all(m in present for m in x[1:])] and lists
