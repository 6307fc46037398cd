"""`tl-clt trace --html`: the graph page is written and draws the pruned graph and the same
supernodes as the Neuronpedia JSON, which match an independent grouping of the saved pruned
graph; `--validate-supernodes` prints the predicted and measured ablation effects."""

from __future__ import annotations

import json

from browser import Browser
from conftest import clt_for

from tl_clt import AttributionGraph, CrossLayerTranscoder, group_supernodes
from tl_clt.cli import main
from tl_clt.lens import load_model
from tl_clt.lens.build import tiny_hf_model
from tl_clt.prune import PruneSpec
from tl_clt.tokenization import SPECIALS, word_level_tokenizer
from tl_clt.viz.neuronpedia import node_ids


def test_trace_writes_the_graph_page_with_supernodes(tmp_path, capsys):
    model_dir, clt_dir, out = tmp_path / "model", tmp_path / "clt", tmp_path / "out"
    hf = tiny_hf_model("gpt2", n_layers=2)
    hf.save_pretrained(model_dir)
    word_level_tokenizer([f"w{i}" for i in range(hf.config.vocab_size - len(SPECIALS))], model_dir)
    clt_for(load_model(model_dir), n_features=32).save_pretrained(clt_dir)
    html = tmp_path / "page.html"
    args = ["trace", "w3 w1 w4 w1 w5", "--model", str(model_dir), "--clt", str(clt_dir),
            "--out", str(out), "--slug", "demo", "--html", str(html),
            "--supernode-threshold", "1.0", "--validate-supernodes"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    pruned = AttributionGraph.load(out / "pruned")
    expected = group_supernodes(
        pruned, CrossLayerTranscoder.from_pretrained(clt_dir), threshold=1.0
    )
    assert expected.supernodes and f"supernodes: {len(expected.supernodes)}" in text
    assert "| supernode |" in text and "correlation" in text and "wrote the graph page" in text
    members = sorted({i for sn in expected.supernodes for i in sn.members})
    alone = AttributionGraph.load(out / "graph").scores(pruned.original_index[members].tolist())
    assert (
        f"the supernodes' {len(members)} features alone: replacement score "
        f"{alone.replacement:.3f}, completeness {alone.completeness:.3f}"
    ) in text
    ids = node_ids(pruned)
    data = json.loads((out / "demo.json").read_text())
    present = {n["node_id"] for n in data["nodes"]}
    want = [
        [s.name, *[ids[i] for i in s.members if ids[i] in present]] for s in expected.supernodes
    ]
    assert data["qParams"]["supernodes"] == [w for w in want if len(w) > 1]
    with Browser() as b:
        b.open(html)
        drawn = b.eval("[...document.querySelectorAll('#graph .node')].map(e => e.dataset.node)")
        assert sorted(drawn) == sorted(ids)
        boxes = b.eval("[...document.querySelectorAll('#graph rect.supernode title')]"
                       ".map(t => t.textContent)")  # fmt: skip
        assert sorted(boxes) == sorted(s.name for s in expected.supernodes)


def test_trace_rank_prunable_only_writes_one_pruned_graph(tmp_path, capsys):
    """With --rank-prunable-only, the pruned/ files, the Neuronpedia JSON and the page hold the
    same nodes: the pruning of graph.prune(nt, et, rank_always_kept=False), recorded in the
    pruned graph's spec."""
    model_dir, clt_dir, out = tmp_path / "model", tmp_path / "clt", tmp_path / "out"
    hf = tiny_hf_model("gpt2", n_layers=2)
    hf.save_pretrained(model_dir)
    word_level_tokenizer([f"w{i}" for i in range(hf.config.vocab_size - len(SPECIALS))], model_dir)
    clt_for(load_model(model_dir), n_features=32).save_pretrained(clt_dir)
    html = tmp_path / "page.html"
    args = ["trace", "w3 w1 w4 w1 w5", "--model", str(model_dir), "--clt", str(clt_dir),
            "--out", str(out), "--slug", "demo", "--html", str(html), "--rank-prunable-only",
            "--node-threshold", "0.5", "--supernodes", "none"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    graph, pruned = AttributionGraph.load(out / "graph"), AttributionGraph.load(out / "pruned")
    assert pruned.info.prune_spec == PruneSpec(0.5, 0.98, rank_always_kept=False)
    expected = graph.prune(0.5, rank_always_kept=False)
    assert pruned.original_index.tolist() == expected.original_index.tolist()
    assert expected.original_index.tolist() != graph.prune(0.5).original_index.tolist()
    ids = set(node_ids(pruned))
    assert {n["node_id"] for n in json.loads((out / "demo.json").read_text())["nodes"]} == ids
    with Browser() as b:
        b.open(html)
        drawn = b.eval("[...document.querySelectorAll('#graph .node')].map(e => e.dataset.node)")
    assert set(drawn) == ids and len(drawn) == len(ids)
