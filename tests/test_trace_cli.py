"""`tl-clt trace` on a model and transcoder given as directories: files written, paths and
scores printed; bad arguments give a clear error and exit code 2."""

from __future__ import annotations

import json

import torch
from conftest import clt_for

from tl_clt import AttributionGraph, NodeKind
from tl_clt.cli import main
from tl_clt.lens import load_model
from tl_clt.lens.build import tiny_hf_model
from tl_clt.tokenization import SPECIALS, word_level_tokenizer


def test_trace_writes_graph_files_and_prints_paths_and_scores(tmp_path, capsys):
    model_dir, clt_dir, out = tmp_path / "model", tmp_path / "clt", tmp_path / "out"
    hf = tiny_hf_model("gpt2", n_layers=2)
    hf.save_pretrained(model_dir)
    word_level_tokenizer([f"w{i}" for i in range(hf.config.vocab_size - len(SPECIALS))], model_dir)
    clt_for(load_model(model_dir), n_features=32).save_pretrained(clt_dir)
    args = ["trace", "w3 w1 w4 w1 w5", "--model", str(model_dir), "--clt", str(clt_dir),
            "--out", str(out), "--slug", "demo", "--paths", "3"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "top paths to" in text and "replacement score:" in text and "completeness score:" in text
    assert text.count(" -> ") >= 3 and "logit" in text
    graph, pruned = AttributionGraph.load(out / "graph"), AttributionGraph.load(out / "pruned")
    assert pruned.original_index is not None and pruned.n_nodes < graph.n_nodes
    info, full = pruned.info, graph.scores()
    assert (
        f"replacement score: {info.replacement_score:.3f} pruned, {full.replacement:.3f} unpruned, "
        f"{info.replacement_score_strict:.3f} strict"
    ) in text
    assert (
        f"completeness score: {info.completeness_score:.3f} pruned, {full.completeness:.3f} "
        f"unpruned, {info.completeness_score_strict:.3f} strict"
    ) in text
    # the share of feature influence pruning keeps, against influence from the matrix inverse
    a = graph.adjacency.double().abs()
    a = a / a.sum(1, keepdim=True).clamp(min=1e-30)
    eye = torch.eye(graph.n_nodes, dtype=torch.float64)
    infl = graph.logit_weights.double() @ (torch.linalg.inv(eye - a) - eye)
    feats = [i for i, n in enumerate(graph.nodes) if n.kind is NodeKind.FEATURE]
    kept = [i for i in pruned.original_index.tolist() if i in set(feats)]
    share = float(infl[kept].sum() / infl[feats].sum())
    tokens = sum(float(infl[i]) for i, n in enumerate(graph.nodes) if n.kind is NodeKind.EMBEDDING)
    assert (
        f"pruning kept {len(kept)} of {len(feats)} features, holding {share:.1%} of the features' "
        f"influence (tokens, always kept, hold {tokens / float(infl.sum()):.1%}"
    ) in text
    assert json.loads((out / "demo.json").read_text())["metadata"]["slug"] == "demo"
    alt = tmp_path / "alt"
    assert (
        main([*args[:-6], "--out", str(alt), "--rank-prunable-only", "--node-threshold", "0.5"])
        == 0
    )
    wired = AttributionGraph.load(alt / "pruned").original_index.tolist()
    assert wired == graph.prune(0.5, rank_always_kept=False).original_index.tolist()
    assert wired != graph.prune(0.5).original_index.tolist()  # the flag changes the graph
    capsys.readouterr()
    assert main([*args[:1], "w3 Zebra", *args[2:]]) == 0  # an unknown word: one plain warning
    err = capsys.readouterr().err
    assert "tl-clt trace: warning: 1 part(s) of the prompt ('Zebra') are not in" in err
    assert main([*args, "--logit-diff", "w3", "w4", "--slug", "diff"]) == 0
    diff = AttributionGraph.load(out / "graph")
    assert [n.token for n in diff.nodes if n.kind is NodeKind.LOGIT] == ["w3 - w4"]
    # --faithfulness N: the N strongest sources turned off, the figures printed and saved, the
    # graph's own definition exact
    capsys.readouterr()
    assert main([*args, "--faithfulness", "3", "--supernodes", "none"]) == 0
    text = capsys.readouterr().out
    saved = json.loads((out / "faithfulness.json").read_text())
    assert len({e["source"] for e in saved["edges"]}) == 3 and saved["direct_sign_agreement"] == 1
    assert f"model  sign agrees {saved['model_sign_agreement']:6.1%}" in text
    assert main([*args, "--faithfulness", "-1"]) == 2


def test_trace_rejects_half_a_model(tmp_path, capsys):
    assert main(["trace", "w1 w2", "--model", str(tmp_path)]) == 2
    assert "--clt" in capsys.readouterr().err
