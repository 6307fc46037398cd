"""The graph page and the circuitsvis renderings in headless Chromium, on a tiny model whose
vocabulary holds hostile token strings (and whose labels and one supernode name therefore do
too): every pruned node and supernode is drawn, a real click on a node shows its label, the
page's own pruning equals `tl_clt.prune` at other thresholds, supernodes collapse into boxes,
and every hostile string renders as text without running or injecting anything."""

from __future__ import annotations

import html as html_module
import json

import pytest
import torch
from browser import Browser, render
from conftest import random_clt

from tl_clt import (
    Intervention,
    NodeKind,
    ReplacementModel,
    attribute,
    build_feature_index,
    group_supernodes,
    intervene,
    render_graph,
)
from tl_clt.errors import InputError
from tl_clt.labels import IndexConfig
from tl_clt.lens import from_hf
from tl_clt.lens.build import tiny_hf_model
from tl_clt.prune import PruneSpec
from tl_clt.tokenization import word_level_tokenizer
from tl_clt.viz import feature_activations, logit_changes
from tl_clt.viz.neuronpedia import node_ids

SCRIPT = "<script>alert(1)</script>"
IMG = "<img/src=x/onerror=document.body.setAttribute('data-pwned','1')>"
CLOSE = "</script><b>bold</b>"
HOSTILE = (SCRIPT, IMG, CLOSE)
PROMPT = f"w1 {SCRIPT} w2 {IMG} w3 {CLOSE} w4 w5"
GROUP = "<b>group</b> </script>"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("graph_page")
    words = [*HOSTILE, "&amp;"] + [f"w{i}" for i in range(40)]
    tok = word_level_tokenizer(words, tmp / "tok")
    lens = from_hf(tiny_hf_model("gpt2", n_layers=2, d_model=32, d_vocab=len(tok)), tok,
                   name="hostile <model>")  # fmt: skip
    clt = random_clt(2, 32, n_features=12, model=lens.identity())
    rm = ReplacementModel(lens, clt)
    ids = [tok.convert_tokens_to_ids(w) for w in HOSTILE]
    tokens = torch.randint(7, len(tok), (24, 10), generator=torch.Generator().manual_seed(0))
    tokens[:, 3:6] = torch.tensor(ids)
    index = build_feature_index(rm, tokens, tmp / "h.db", IndexConfig(k=4, n_pool=40),
                                progress=False)  # fmt: skip
    graph = attribute(rm, PROMPT)
    pruned = graph.prune()
    feats = pruned.indices(NodeKind.FEATURE)
    grouped = group_supernodes(pruned, clt, index, groups={GROUP: feats[:2]}, auto=True)
    page = render_graph(graph, index, grouped)
    return rm, index, graph, pruned, grouped, page.save(tmp / "graph.html"), page, tmp


def _drawn(b: Browser, selector: str, attribute: str) -> list[str]:
    return b.eval(f"[...document.querySelectorAll({json.dumps(selector)})]"
                  f".map(e => e.getAttribute({json.dumps(attribute)}))")  # fmt: skip


def _pruned_ids(graph, thresholds=None) -> set[str]:
    ids = node_ids(graph)
    pruned = graph.prune(*thresholds) if thresholds else graph.prune()
    return {ids[i] for i in pruned.original_index.tolist()}


def _check_safe(b: Browser) -> None:
    assert b.eval("document.body.hasAttribute('data-pwned')") is False
    assert b.eval("document.querySelectorAll('script').length") == 5  # data + 4 scripts
    assert b.eval("document.querySelectorAll('b, img, iframe').length") == 0


def test_every_node_and_supernode_is_drawn_and_a_click_shows_the_label(hostile):
    rm, index, graph, pruned, grouped, path, page, _ = hostile
    assert len(grouped.supernodes) >= 1
    with Browser() as b:
        b.open(path)
        assert set(_drawn(b, "#graph .node", "data-node")) == _pruned_ids(graph)
        assert len(_drawn(b, "#graph .node", "data-node")) == pruned.n_nodes
        names = b.eval("[...document.querySelectorAll('#graph rect.supernode')]"
                       ".map(r => r.querySelector('title').textContent)")  # fmt: skip
        assert sorted(names) == sorted(s.name for s in grouped.supernodes)
        ids = node_ids(pruned)
        labelled = [i for i in pruned.indices(NodeKind.FEATURE)
                    if index.label(pruned.nodes[i].layer, pruned.nodes[i].feature)]  # fmt: skip
        for i in labelled[:3]:
            n = pruned.nodes[i]
            b.click_selector(f'#graph [data-node="{ids[i]}"]')
            assert b.eval("document.getElementById('detail').getAttribute('data-node')") == ids[i]
            detail = b.eval("document.getElementById('detail').textContent")
            assert index.label(n.layer, n.feature).text in detail
            assert f"feature {n.layer}:{n.feature} @{n.position}" in detail
            assert "strongest inputs" in detail and "top contexts" in detail  # the feature card
        b.click_selector("#graph rect.supernode")
        assert b.eval("document.getElementById('detail').getAttribute('data-node')").startswith(
            "supernode:"
        )
        _check_safe(b)
        b.open(render_graph(pruned).save(path.with_name("pruned.html")))  # a pruned graph: whole
        assert set(_drawn(b, "#graph .node", "data-node")) == _pruned_ids(graph)


def test_hostile_strings_render_as_text(hostile):
    rm, index, graph, pruned, grouped, path, page, _ = hostile
    with Browser() as b:
        b.open(path)
        tokens = b.eval(
            "[...document.querySelectorAll('#graph text.token title')].map(t => t.textContent)"
        )  # the full token (the label may be cut)
        assert tokens == rm.lens.to_str_tokens(graph.tokens) and set(HOSTILE) <= set(tokens)
        titles = b.eval("[...document.querySelectorAll('#graph rect.supernode title')]"
                        ".map(t => t.textContent)")  # fmt: skip
        labels = b.eval(
            "[...document.querySelectorAll('#graph text.sn-label')]"
            ".map(t => [t.firstChild.nodeValue, t.querySelector('title').textContent])"
        )  # the label shown (cut to its box) and its full name
        assert GROUP in titles and GROUP in [name for _, name in labels]
        for shown, name in labels:
            assert shown == name or (shown.endswith("\u2026") and name.startswith(shown[:-1]))
        b.click_selector("#graph rect.supernode")  # the first box is the hostile name's
        assert GROUP in b.eval("document.getElementById('detail').textContent")
        emb = [i for i in pruned.indices(NodeKind.EMBEDDING) if pruned.nodes[i].token == IMG][0]
        b.click_selector(f'#graph [data-node="{node_ids(pruned)[emb]}"]')
        assert IMG in b.eval("document.getElementById('detail').textContent")
        _check_safe(b)
    html = page.html()
    assert SCRIPT not in html and CLOSE not in html
    assert "default-src 'none'" in html_module.unescape(html)  # no network at all
    assert page._repr_html_().startswith("<iframe srcdoc=") and "<script" not in page._repr_html_()


def test_the_pages_pruning_is_tl_clt_prune(hostile):
    rm, index, graph, pruned, grouped, path, page, _ = hostile
    data = page.data["tl-graph"]
    assert not data["meta"]["truncated"] and data["meta"]["max_node_threshold"] > 0.9
    cases = [(0.5, 0.9), (0.7, 0.95), (0.8, 0.98), (0.9, 0.99)]
    meta = data["meta"]
    info = graph.prune(meta["node_threshold"], meta["edge_threshold"]).info
    scores = ["replacement", "completeness", "replacement_strict", "completeness_strict"]
    assert [meta[k] for k in scores] == [
        info.replacement_score,
        info.completeness_score,
        info.replacement_score_strict,
        info.completeness_score_strict,
    ]
    with Browser() as b:
        b.open(path)
        subtitle = b.eval("document.getElementById('subtitle').textContent")
        shown = [b.eval(f"Number({meta[k]}).toPrecision(3)") for k in scores]
        assert (
            f"default pruning: replacement {shown[0]}, completeness {shown[1]} (strict, counting "
            f"what pruning dropped as error: {shown[2]}, {shown[3]})"
        ) in subtitle
        for nt, et in cases:
            js = b.eval(
                f"(function () {{ var d = TLGraph.data('tl-graph'), g = TLGraph.model(d);"
                f" var v = TLGraph.prune(g, {nt}, {et});"
                f" return d.nodes.id.filter(function (id, i) {{ return v.nodes[i]; }}); }})()"
            )  # fmt: skip
            assert set(js) == _pruned_ids(graph, (nt, et)), (nt, et)
            sc = b.eval(
                f"(function () {{ var g = TLGraph.model(TLGraph.data('tl-graph'));"
                f" var s = TLGraph.scores(g, TLGraph.prune(g, {nt}, {et}));"
                f" return [s.replacement, s.completeness]; }})()"
            )  # fmt: skip
            info = graph.prune(nt, et).info
            assert sc == pytest.approx([info.replacement_score, info.completeness_score], rel=1e-5)
        b.open(path, fragment="nt=0.6&et=0.95")  # the sliders, set from the address
        assert set(_drawn(b, "#graph .node", "data-node")) == _pruned_ids(graph, (0.6, 0.95))
        info = graph.prune(0.6, 0.95).info
        shown = [b.eval(f"Number({x}).toPrecision(3)")
                 for x in (info.replacement_score, info.completeness_score)]  # fmt: skip
        counts = b.eval("document.getElementById('counts').textContent")
        assert f"this pruning: replacement {shown[0]}, completeness {shown[1]}" in counts
        b.open(path, fragment="group=1")  # supernodes collapsed into one box each
        units = _drawn(b, "#graph rect.supernode.unit", "data-supernode")
        members = {node_ids(pruned)[i] for s in grouped.supernodes for i in s.members}
        drawn = set(_drawn(b, "#graph .node", "data-node"))
        assert len(units) == len(grouped.supernodes) and not drawn & members
        assert drawn | members == _pruned_ids(graph)


def test_the_pages_pruning_is_graph_prune_without_ranking_the_always_kept(hostile):
    """A page of a graph pruned with rank_always_kept=False shows that pruned graph, and its
    sliders re-prune with the same flag: equal to graph.prune(nt, et, rank_always_kept=False)."""
    rm, index, graph, pruned, grouped, path, page, tmp = hostile
    spec = PruneSpec(0.7, 0.95, rank_always_kept=False)
    mine = graph.prune(spec)
    assert _pruned_ids(graph, (0.7, 0.95, False)) != _pruned_ids(graph, (0.7, 0.95))
    flagged = render_graph(mine, index).save(tmp / "flagged.html")
    assert render_graph(graph, index, prune=spec).html() == render_graph(mine, index).html()
    with pytest.raises(InputError, match="pruned with"):
        render_graph(mine, prune=PruneSpec(0.7, 0.95))
    with Browser() as b:
        b.open(flagged)
        assert set(_drawn(b, "#graph .node", "data-node")) == _pruned_ids(graph, (0.7, 0.95, False))
        for nt, et in [(0.5, 0.9), (0.6, 0.95), (0.8, 0.98), (0.9, 0.99)]:
            js = b.eval(
                f"(function () {{ var d = TLGraph.data('tl-graph'), g = TLGraph.model(d);"
                f" var v = TLGraph.prune(g, {nt}, {et});"
                f" return d.nodes.id.filter(function (id, i) {{ return v.nodes[i]; }}); }})()"
            )  # fmt: skip
            assert set(js) == _pruned_ids(graph, (nt, et, False)), (nt, et)
        b.open(flagged, fragment="nt=0.6&et=0.95")  # the sliders, set from the address
        assert set(_drawn(b, "#graph .node", "data-node")) == _pruned_ids(graph, (0.6, 0.95, False))


def test_the_page_works_inside_a_notebook_cell(hostile):
    """`_repr_html_` (what Jupyter shows) puts the page in a sandboxed iframe: it draws there
    too, offline, and the hostile strings stay text."""
    rm, index, graph, pruned, grouped, path, page, tmp = hostile
    cell = tmp / "notebook.html"
    cell.write_text(f"<!DOCTYPE html><html><body><div class='output'>{page._repr_html_()}</div>"
                    "</body></html>")  # fmt: skip
    with Browser() as b:
        b.open(cell)
        drawn = b.frame_eval(
            "[...document.querySelectorAll('#graph .node')].map(e => e.dataset.node)"
        )
        assert set(drawn) == _pruned_ids(graph) and len(drawn) == pruned.n_nodes
        tokens = b.frame_eval("[...document.querySelectorAll('#graph text.token title')]"
                              ".map(t => t.textContent)")  # fmt: skip
        assert set(HOSTILE) <= set(tokens)
        assert b.frame_eval("document.querySelectorAll('b, img').length") == 0
        assert b.eval("document.querySelectorAll('script').length") == 0


def test_circuitsvis_renderings_show_the_right_numbers_and_hostile_tokens_as_text(hostile):
    rm, index, graph, pruned, grouped, path, page, tmp = hostile
    lens, clt = rm.lens, rm.clt
    panel = feature_activations(rm, PROMPT, graph, index, top=5)
    vis = panel.items[0][1]
    tokens = lens.tokens(PROMPT)
    names = [lens.mlp_in(layer, clt.cfg.input_hook) for layer in range(2)]
    _, cache = lens.cache(tokens, names)
    for k, label in enumerate(vis.props["secondDimensionLabels"]):
        layer, feature = (int(x) for x in label.split()[0].split(":"))
        expected = clt.encode_layer(cache[names[layer]], layer)[0, :, feature]
        got = torch.tensor([row[0][k] for row in vis.props["activations"]])
        torch.testing.assert_close(got, expected.float(), rtol=1e-4, atol=1e-5)
    feat = pruned.nodes[pruned.indices(NodeKind.FEATURE)[0]]
    result = intervene(rm, PROMPT, Intervention(feat.layer, feat.feature, feat.position, scale=0.0))
    changes = logit_changes(result, k=5)
    after = changes.items[1][1].props
    probs = result.logits_after[-1].float().softmax(-1)
    torch.testing.assert_close(torch.tensor(after["values"]), probs.topk(5).values)
    delta = changes.items[2][1].props
    vocab = lens.vocabulary()
    for tok, value in zip(delta["tokens"], delta["values"]):
        i = vocab.index(html_module.unescape(tok.strip()))
        assert value == pytest.approx(
            float(result.logits_after[-1, i] - result.logits_before[-1, i]), abs=1e-5
        )
    shown = [list(HOSTILE), [html_module.unescape(t.strip()) for t in delta["tokens"]]]
    for p, strings in zip((panel, changes), shown):
        dom = render(p.save(tmp / "cv.html"))
        assert not dom.has_attribute("data-pwned") and dom.elements("b") == []
        assert len(dom.elements("script")) == 2  # the bundle and the render calls
        assert all(s in dom.text for s in strings)  # prompt tokens, top tokens: as text
