"""AttributionGraph: node table, files (round trip, damaged files), pruned graphs that map back
to the original, and the Neuronpedia / circuit-tracer JSON export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import clt_for, get_model
from safetensors.torch import load_file, save_file

from tl_clt import AttributionGraph, LogitDifference, NodeKind, ReplacementModel, attribute
from tl_clt import prune as P
from tl_clt.errors import CheckpointError, InputError
from tl_clt.targets import logit_direction, token_id
from tl_clt.viz.neuronpedia import node_ids, to_neuronpedia, write_neuronpedia

PROMPT = "w3 w1 w4 w1 w5 w9 w2 w6"


@pytest.fixture(scope="module")
def graph():
    lens = get_model("gpt2", n_layers=3)
    return attribute(ReplacementModel(lens, clt_for(lens, n_features=40)), PROMPT)


def test_node_table_is_explicit(graph):
    kinds = [n.kind for n in graph.nodes]
    assert set(kinds) == set(NodeKind)
    L, pos = graph.info.n_layers, len(graph.tokens)
    assert kinds.count(NodeKind.ERROR) == L * (pos - 1) and kinds.count(NodeKind.EMBEDDING) == pos
    i = graph.find(NodeKind.ERROR, layer=1, position=3)
    assert graph.nodes[i].layer == 1 and graph.nodes[i].activation > 0
    f = graph.nodes[graph.indices(NodeKind.FEATURE)[0]]
    assert f.token == graph.nodes[f.position].token and f.activation != 0
    # the node layout says where each kind sits
    lay = graph.layout
    assert (lay.n_pos, lay.n_layers, lay.n_nodes) == (pos, L, graph.n_nodes)
    for kind, span in [(NodeKind.EMBEDDING, lay.embeddings), (NodeKind.FEATURE, lay.features),
                       (NodeKind.ERROR, lay.errors), (NodeKind.LOGIT, lay.logits)]:  # fmt: skip
        assert graph.indices(kind) == list(range(graph.n_nodes))[span]
    assert [graph.nodes[i][:3] for i in range(graph.n_nodes)[lay.error_slice(1)]] == [
        (NodeKind.ERROR, q, 1) for q in range(1, pos)
    ]
    with pytest.raises(InputError, match="no node layout"):
        _ = graph.prune().layout
    # rows of embeddings and errors are empty; features feed only later layers
    assert not graph.adjacency[graph.mask(NodeKind.EMBEDDING, NodeKind.ERROR)].any()
    for t in graph.indices(NodeKind.FEATURE):
        for s in graph.adjacency[t].nonzero()[:, 0].tolist():
            src = graph.nodes[s]
            if src.kind in (NodeKind.FEATURE, NodeKind.ERROR):
                assert src.layer < graph.nodes[t].layer and src.position <= graph.nodes[t].position


def test_save_load_round_trip(graph, tmp_path):
    graph.save(tmp_path / "g")
    loaded = AttributionGraph.load(tmp_path / "g")
    assert (
        loaded.nodes == graph.nodes and loaded.info == graph.info and loaded.prompt == graph.prompt
    )
    assert torch.equal(loaded.adjacency, graph.adjacency) and torch.equal(
        loaded.tokens, graph.tokens
    )
    pruned = graph.prune()
    pruned.save(tmp_path / "p")
    again = AttributionGraph.load(tmp_path / "p")
    assert torch.equal(again.original_index, pruned.original_index)
    assert again.info.replacement_score == pruned.info.replacement_score
    # a pruned graph saved before pruned graphs had two pairs of scores held the strict pair
    # under the plain names: it loads with them as the strict pair and its own scores computed
    record = json.loads((tmp_path / "p" / "graph.json").read_text())
    old = record["info"]
    old.update(old.pop("prune_spec"))  # and its thresholds only, not the whole spec
    del old["rank_always_kept"]
    old["replacement_score"] = old.pop("replacement_score_strict")
    old["completeness_score"] = old.pop("completeness_score_strict")
    (tmp_path / "p" / "graph.json").write_text(json.dumps(record))
    tensors = load_file(tmp_path / "p" / "graph.safetensors")  # older files: no node table there
    save_file(tensors, tmp_path / "p" / "graph.safetensors")
    older = AttributionGraph.load(tmp_path / "p")
    info, want = older.info, pruned.info
    assert (info.replacement_score_strict, info.completeness_score_strict) == (
        want.replacement_score_strict,
        want.completeness_score_strict,
    )
    assert info.replacement_score == pytest.approx(want.replacement_score, rel=1e-6)
    assert info.completeness_score == pytest.approx(want.completeness_score, rel=1e-6)


def test_a_pruned_graph_carries_its_spec_through_files(graph, tmp_path):
    spec = P.PruneSpec(0.6, 0.95, rank_always_kept=False)
    pruned = graph.prune(spec)
    assert pruned.info.prune_spec == spec and pruned.parent is graph
    assert (pruned.info.node_threshold, pruned.info.edge_threshold) == (0.6, 0.95)
    assert graph.prune(0.6, 0.95, rank_always_kept=False).nodes == pruned.nodes
    assert graph.info.prune_spec is None
    pruned.save(tmp_path / "p")
    record = json.loads((tmp_path / "p" / "graph.json").read_text())
    assert record["info"]["prune_spec"] == {
        "node_threshold": 0.6, "edge_threshold": 0.95, "rank_always_kept": False
    }  # fmt: skip
    loaded = AttributionGraph.load(tmp_path / "p")
    assert loaded.info == pruned.info and loaded.parent is None
    # shown as it is: the export holds exactly its nodes
    data = to_neuronpedia(loaded, "x")
    assert {n["node_id"] for n in data["nodes"]} == set(node_ids(pruned))
    # a pruned graph saved before the spec was recorded: its thresholds, the flag unknown
    del record["info"]["prune_spec"]
    record["info"].update(node_threshold=0.6, edge_threshold=0.95)
    (tmp_path / "p" / "graph.json").write_text(json.dumps(record))
    tensors = load_file(tmp_path / "p" / "graph.safetensors")  # older files: no node table there
    save_file(tensors, tmp_path / "p" / "graph.safetensors")
    older = AttributionGraph.load(tmp_path / "p")
    assert older.info.prune_spec == P.PruneSpec(0.6, 0.95, rank_always_kept=None)
    with pytest.raises(InputError, match="rank_always_kept"):
        graph.prune(older.info.prune_spec)
    with pytest.raises(InputError, match="not both"):
        graph.prune(spec, 0.9)
    with pytest.raises(InputError, match="node_threshold"):
        P.PruneSpec(1.5)


def test_logit_nodes_carry_their_token_ids(tmp_path):
    lens = get_model("gpt2", n_layers=2)
    rm = ReplacementModel(lens, clt_for(lens, n_features=24))
    diff = attribute(rm, PROMPT, targets=LogitDifference("w3", "w4"))
    w3, w4 = (int(lens.to_tokens(w, prepend_bos=False)[0, 0]) for w in ("w3", "w4"))
    (node,) = [diff.nodes[i] for i in diff.indices(NodeKind.LOGIT)]
    assert (node.token_id, node.negative_id, node.is_difference) == (w3, w4, True)
    diff.save(tmp_path / "d")
    assert AttributionGraph.load(tmp_path / "d").nodes == diff.nodes
    # the direction comes from the ids alone: a label that cannot be parsed does not matter
    direction = logit_direction(node._replace(token="not a label"), lens.d_vocab)
    assert direction.nonzero()[:, 0].tolist() == sorted([w3, w4])
    assert (float(direction[w3]), float(direction[w4])) == (1.0, -1.0)
    # the Neuronpedia id keeps its virtual vocabulary id (a difference has two tokens)
    assert node_ids(diff)[diff.indices(NodeKind.LOGIT)[0]].split("_")[1] == str(lens.d_vocab)
    with pytest.raises(InputError, match="1 tokens, not one|not one"):
        token_id(lens, "w3 w4")


def test_damaged_files_raise_checkpoint_errors(graph, tmp_path):
    graph.save(tmp_path)
    (tmp_path / "graph.safetensors").write_bytes(b"\x00\x01 not safetensors")
    with pytest.raises(CheckpointError):
        AttributionGraph.load(tmp_path)
    graph.save(tmp_path)
    record = json.loads((tmp_path / "graph.json").read_text())
    record["nodes"] = record["nodes"][:-1]  # the adjacency no longer fits the node table
    tensors = load_file(tmp_path / "graph.safetensors")
    save_file(tensors, tmp_path / "graph.safetensors", metadata={"graph": json.dumps(record)})
    with pytest.raises(CheckpointError, match="malformed"):
        AttributionGraph.load(tmp_path)
    with pytest.raises(CheckpointError):
        AttributionGraph.load(tmp_path / "missing")


def test_pruned_graph_maps_back_to_the_original(graph):
    pruned = graph.prune(0.8, 0.98)
    idx = pruned.original_index
    assert [graph.nodes[i] for i in idx.tolist()] == pruned.nodes
    kept = pruned.adjacency != 0
    torch.testing.assert_close(pruned.adjacency[kept], graph.adjacency[idx][:, idx][kept])
    assert pruned.mask(NodeKind.LOGIT).sum() == graph.mask(NodeKind.LOGIT).sum()
    assert pruned.mask(NodeKind.EMBEDDING).sum() == len(graph.tokens)
    assert pruned.n_nodes < graph.n_nodes
    full = graph.scores()
    own = pruned.scores()  # the pruned graph as it stands
    assert (pruned.info.replacement_score, pruned.info.completeness_score) == own
    # strict: measured in the parent, with what pruning dropped counted as error
    node_mask = torch.zeros(graph.n_nodes, dtype=torch.bool)
    node_mask[idx] = True
    edge_mask = torch.zeros(graph.n_nodes, graph.n_nodes, dtype=torch.bool)
    edge_mask[idx[:, None], idx[None, :]] = pruned.adjacency != 0
    strict = P.scores(
        graph.adjacency,
        graph.logit_weights,
        graph.mask(NodeKind.ERROR),
        graph.mask(NodeKind.EMBEDDING),
        node_mask,
        edge_mask,
    )
    assert pruned.info.replacement_score_strict == pytest.approx(strict.replacement)
    assert pruned.info.completeness_score_strict == pytest.approx(strict.completeness)
    assert 0 < pruned.info.replacement_score_strict <= full.replacement + 1e-6
    assert 0 < pruned.info.completeness_score_strict <= full.completeness + 1e-6
    # pruning a pruned graph composes the indices
    twice = pruned.prune(0.5, 0.9)
    assert [graph.nodes[i] for i in twice.original_index.tolist()] == twice.nodes
    paths = pruned.top_paths(3)
    assert paths and all(pruned.nodes[p.nodes[-1]].kind is NodeKind.LOGIT for p in paths)
    assert all(pruned.nodes[p.nodes[0]].kind in (NodeKind.EMBEDDING, NodeKind.ERROR) for p in paths)
    assert paths[0].score >= paths[-1].score
    # kept influence: counted over the kept nodes' own features, also from a pruned graph
    infl = graph.influence().influence
    feats = set(graph.indices(NodeKind.FEATURE))
    kept = [i for i in pruned.original_index.tolist() if i in feats]
    k = graph.kept_influence(pruned)
    assert (k.n_features, k.n_kept) == (len(feats), len(kept))
    assert k.kept_share == pytest.approx(float(infl[kept].sum() / infl[sorted(feats)].sum()))
    assert pruned.kept_influence(twice).n_kept == int(twice.mask(NodeKind.FEATURE).sum())
    with pytest.raises(InputError, match="needs a pruned graph"):
        graph.kept_influence(graph)
    with pytest.raises(InputError, match="not a pruning of this one"):
        twice.kept_influence(pruned)


def test_neuronpedia_export(graph, tmp_path):
    ids = node_ids(graph)
    assert len(set(ids)) == len(ids)
    # an error id can never equal a feature id: feature ids have a number in the middle
    assert all("_error_" in ids[i] for i in graph.indices(NodeKind.ERROR))
    group = [("group", [ids[i] for i in graph.indices(NodeKind.FEATURE)[:2]])]
    data = to_neuronpedia(graph, "tiny", supernodes=group)
    assert set(data) == {"metadata", "qParams", "nodes", "links"}
    assert data["metadata"]["prompt_tokens"] == [
        graph.nodes[i].token for i in range(len(graph.tokens))
    ]
    assert data["qParams"]["supernodes"] == [["group", *group[0][1]]]
    node_set = {n["node_id"] for n in data["nodes"]}
    assert all(link["source"] in node_set and link["target"] in node_set for link in data["links"])
    pruned = graph.prune()
    assert len(data["links"]) == int((pruned.adjacency != 0).sum())
    logits = [n for n in data["nodes"] if n["feature_type"] == "logit"]
    assert sum(n["is_target_logit"] for n in logits) == 1
    assert {n["layer"] for n in logits} == {str(graph.info.n_layers + 1)}
    path = write_neuronpedia(graph, tmp_path, "tiny")
    write_neuronpedia(
        graph, tmp_path, "tiny", supernodes=group
    )  # rewriting replaces the index entry
    index = json.loads((tmp_path / "graph-metadata.json").read_text())
    assert [g["slug"] for g in index["graphs"]] == ["tiny"] and json.loads(path.read_text()) == data
    # a pruned graph is exported as it is, never pruned again with other settings
    assert to_neuronpedia(pruned, "tiny", supernodes=group) == data
    with pytest.raises(InputError, match="pruned with"):
        to_neuronpedia(pruned, "x", prune=P.PruneSpec(0.5))


def test_scores_match_prune_functions(graph):
    s = graph.scores()
    direct = P.scores(
        graph.adjacency,
        graph.logit_weights,
        graph.mask(NodeKind.ERROR),
        graph.mask(NodeKind.EMBEDDING),
    )
    assert s == direct and 0 < s.replacement < 1 and 0 < s.completeness < 1


def _scores_np(A, w, is_error, is_token, counted=None):
    """The §3 scores, written out with numpy (an independent computation); `counted`: the nodes
    the completeness sums run over (default: all)."""
    a = np.abs(A) / np.maximum(np.abs(A).sum(1, keepdims=True), 1e-30)
    infl, step = np.zeros(len(w)), w @ a
    while step.any():
        infl, step = infl + step, step @ a
    tokens, errors = infl[is_token].sum(), infl[is_error].sum()
    out = (infl + w) * (np.ones(len(w), bool) if counted is None else counted)
    completeness = ((1 - a[:, is_error].sum(1)) * out).sum() / out.sum()
    return tokens / (tokens + errors), completeness


def test_pruned_scores_are_those_of_the_exported_graph_json(graph):
    """A pruned graph's `replacement_score` / `completeness_score` are the §3 formulas applied to
    the pruned graph as exported (nodes and links of the Neuronpedia JSON)."""
    data = to_neuronpedia(graph, "tiny")
    nodes = data["nodes"]
    at = {n["node_id"]: i for i, n in enumerate(nodes)}
    A = np.zeros((len(nodes), len(nodes)))
    for link in data["links"]:
        A[at[link["target"]], at[link["source"]]] = link["weight"]
    kind = np.array([n["feature_type"] for n in nodes])
    w = np.array([n["token_prob"] for n in nodes])
    replacement, completeness = _scores_np(
        A, w, kind == "mlp reconstruction error", kind == "embedding"
    )
    info = graph.prune().info
    assert info.replacement_score == pytest.approx(replacement, rel=1e-5)
    assert info.completeness_score == pytest.approx(completeness, rel=1e-5)


def test_scores_of_chosen_features(graph):
    """graph.scores(features): the same as turning every other feature into an error node of its
    own (its inputs no longer counted, and left out of the completeness sums, which run over
    the nodes that stay), scored with numpy; all features give the plain scores."""
    feats = graph.indices(NodeKind.FEATURE)
    infl = graph.influence().influence
    chosen = sorted(feats, key=lambda i: -float(infl[i]))[: len(feats) // 3]
    dropped = sorted(set(feats) - set(chosen))
    A = graph.adjacency.double().numpy().copy()
    A[dropped] = 0.0
    is_error = graph.mask(NodeKind.ERROR).numpy().copy()
    is_error[dropped] = True
    w = graph.logit_weights.double().numpy()
    stays = np.ones(graph.n_nodes, bool)
    stays[dropped] = False
    replacement, completeness = _scores_np(
        A, w, is_error, graph.mask(NodeKind.EMBEDDING).numpy(), counted=stays
    )
    got = graph.scores(chosen)
    assert got.replacement == pytest.approx(replacement, rel=1e-5)
    assert got.completeness == pytest.approx(completeness, rel=1e-5)
    whole = graph.scores()
    assert graph.scores(feats) == pytest.approx(whole)
    assert got.replacement < whole.replacement
    with pytest.raises(InputError, match="feature nodes"):
        graph.scores([graph.indices(NodeKind.ERROR)[0]])
    with pytest.raises(InputError, match="feature nodes"):
        graph.scores([graph.n_nodes])
