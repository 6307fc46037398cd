"""What people see on a byte-level BPE model (and a SentencePiece-style one): every string of
a graph page as Chromium renders it (token axis, node details, feature cards), of a feature
browser, a feature card, an intervention result, an explainer prompt, `tl-clt feature`'s text
and `tl-clt trace`'s output and files holds no vocabulary symbol ("Ġ", "Ċ", "▁"), and does hold
the decoded text, computed here from the tokenizer's own conventions. Text targets of several
tokens are refused with the same error by every entry point."""

from __future__ import annotations

import json
import re

import pytest
from bpe import (
    bpe_replacement,
    corpus,
    expected_texts,
    raw_symbols,
    save_bpe_model,
    strings,
)
from browser import Browser, render
from conftest import clt_for

from tl_clt import (
    Intervention,
    LogitDifference,
    NodeKind,
    attribute,
    build_feature_index,
    feature_effects,
    generate,
    group_supernodes,
    intervene,
    render_graph,
)
from tl_clt.cli import main
from tl_clt.errors import InputError
from tl_clt.labels import IndexConfig
from tl_clt.labels.explainers import prompt as explainer_prompt
from tl_clt.labels.text import describe
from tl_clt.lens import load_model
from tl_clt.tokenization import visible
from tl_clt.viz import logit_changes
from tl_clt.viz.features import feature_browser, feature_card

PROMPT = "The road from Paris to Tokyo is long.\n\tIt took"
MULTI = " Zürich"  # "ü" is two bytes the vocabulary keeps apart: two tokens


def _vocab_id(lens, symbol: str) -> int:
    return lens.tokenizer.get_vocab()[symbol]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bpe_display")
    rm = bpe_replacement("byte_level")
    index = build_feature_index(rm, corpus(48), tmp / "f.db", IndexConfig(k=4, n_pool=40),
                                progress=False)  # fmt: skip
    return rm, index, tmp


def _clean(texts) -> None:
    found = {t: raw_symbols(t) for t in texts if raw_symbols(t)}
    assert not found, f"vocabulary symbols shown: {list(found.items())[:5]}"


def _features_with_contexts(index, n: int = 3) -> list[tuple[int, int]]:
    live = [f for f in index.live_features() if index.examples(*f, "top")]
    assert len(live) >= n
    return live[:n]


def test_graph_page_shows_decoded_tokens(bpe):
    rm, index, tmp = bpe
    lens = rm.lens
    graph = attribute(rm, PROMPT, targets=[" Paris", "\n"])
    pruned = graph.prune()
    grouped = group_supernodes(pruned, rm.clt, index, auto=True)
    page = render_graph(graph, index, grouped)
    path = page.save(tmp / "graph.html")
    html = path.read_text(encoding="utf-8")
    _clean([html])  # the whole file: data, scripts, styles
    shown = [visible(t) for t in expected_texts(lens, graph.tokens.tolist())]
    assert "\u2423Paris" in shown and "\u21b5" in shown and "\u21e5" in shown
    dom = render(path)
    _clean([dom.text, *(v for _, attrs in dom.tags for v in attrs.values())])
    with Browser() as b:
        b.open(path)
        axis = b.eval("[...document.querySelectorAll('#graph text.token title')]"
                      ".map(t => t.textContent)")  # fmt: skip
        assert axis == shown
        texts = [b.eval("document.body.innerText")]
        ids = b.eval(
            "[...document.querySelectorAll('#graph .node')].map(e => e.getAttribute('data-node'))"
        )
        logit = [i for i in ids if i.startswith(f"{graph.info.n_layers + 1}_")]
        features = [i for i in ids if i.split("_")[0].isdigit() and "error" not in i][:4]
        details = {}
        for node in [*logit, *features]:
            b.click_selector(f'#graph [data-node="{node}"]')
            details[node] = b.eval("document.getElementById('detail').textContent")
        texts += list(details.values())
    _clean(texts)
    paris = f"{graph.info.n_layers + 1}_{_vocab_id(lens, 'ĠParis')}_{graph.tokens.shape[0] - 1}"
    assert '"\u2423Paris"' in details[paris]  # the logit node's detail names the decoded token
    assert any("top contexts" in d for d in details.values())  # a feature card was drawn


def test_feature_card_browser_prompt_and_text_show_decoded_contexts(bpe, capsys):
    rm, index, tmp = bpe
    lens = rm.lens
    layer, feature = _features_with_contexts(index, 1)[0]
    best = index.examples(layer, feature, "top")[0]
    tokens = expected_texts(lens, list(best.token_ids))
    running = [visible(t, spaces=False) for t in tokens]
    promote = index.logit_effects(layer, feature).promote[:5]
    promoted = [visible(t) for t in expected_texts(lens, [e.token_id for e in promote])]
    # a circuitsvis card: its data, and the page Chromium renders from it
    card = feature_card(index, layer, feature)
    props = [s for _, vis in card.items for s in strings(vis.props)]
    _clean(props)
    assert running[best.peak] in props
    dom = render(card.save(tmp / "card.html"))
    _clean([dom.text])
    assert running[best.peak] in dom.text
    # the feature browser (features.js): the context as running text, promoted tokens alone
    path = feature_browser(index).save(tmp / "features.html")
    _clean([path.read_text(encoding="utf-8")])
    dom = render(path, fragment=f"{layer}:{feature}")
    _clean([dom.text])
    assert "".join(running) in dom.text
    assert all(p in dom.text for p in promoted)
    # the explainer prompt and `tl-clt feature`'s text: running text, the peak in [[ ]]
    marked = "".join(f"[[{t}]]" if i == best.peak else t for i, t in enumerate(running))
    described = describe(index, layer, feature, n=1)
    _clean([described])
    assert marked[:60] in described and f"{promoted[0]!r}" in described
    assert main(["feature", f"{layer}:{feature}", "--index", str(index.path), "-n", "1"]) == 0
    assert capsys.readouterr().out.strip() == described
    ex = index.feature_examples(layer, feature)
    text = explainer_prompt(ex)
    _clean([text])
    shown = ex.top + ex.samples
    assert shown
    first = shown[0]
    first_running = [visible(t, spaces=False) for t in expected_texts(lens, list(first.token_ids))]
    assert (
        "".join(f"[[{t}]]" if i == first.peak else t for i, t in enumerate(first_running)) in text
    )
    assert ", ".join(promoted) in text


def test_intervention_result_and_panel_show_decoded_tokens(bpe):
    rm, index, _ = bpe
    lens = rm.lens
    layer, feature = _features_with_contexts(index, 1)[0]
    result = intervene(rm, PROMPT, [Intervention(layer, feature, scale=-3.0)])
    ids = result.logits_before[-1].topk(5).indices.tolist()
    top = [visible(t) for t in expected_texts(lens, ids)]
    assert [t.token for t in result.top_tokens(after=False)] == expected_texts(lens, ids)
    text = str(result)
    _clean([text])
    assert "prompt: <|endoftext|>The road from Paris to Tokyo is long.\u21b5\u21e5It took" in text
    assert all(t in text for t in top)
    panel = logit_changes(result)
    props = [s for _, vis in panel.items for s in strings(vis.props)]
    _clean([panel.header, *props])
    assert f" {top[0]} " in props
    gen = generate(rm, PROMPT, [Intervention(layer, feature, scale=-3.0)], max_new_tokens=3)
    _clean([str(gen), *gen.before, *gen.after])
    continuation = lens.tokenizer.decode(
        lens.tokenizer.convert_tokens_to_ids(lens.tokenizer.tokenize(gen.text_before))
    )
    assert gen.text_before == continuation and "".join(gen.before) == gen.text_before


@pytest.mark.parametrize("kind", ["byte_level", "metaspace"])
def test_trace_cli_prints_and_writes_decoded_tokens(kind, tmp_path, capsys):
    model_dir, clt_dir, out = tmp_path / "model", tmp_path / "clt", tmp_path / "out"
    save_bpe_model(model_dir, kind)
    lens = load_model(model_dir)
    clt_for(lens, n_features=32).save_pretrained(clt_dir)
    page = tmp_path / "graph.html"
    args = ["trace", PROMPT, "--model", str(model_dir), "--clt", str(clt_dir), "--out", str(out),
            "--slug", "bpe", "--target", " Paris", "--html", str(page)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    _clean([printed])
    assert "top logit: '\u2423Paris'" in printed and "top paths to '\u2423Paris'" in printed
    data = json.loads((out / "bpe.json").read_text())
    _clean(strings(data))
    ids = lens.tokens(PROMPT)[0].tolist()
    expected = [visible(t, spaces=False) for t in expected_texts(lens, ids)]
    assert data["metadata"]["prompt_tokens"] == expected
    assert " Paris" in expected
    assert any(
        n["clerp"] == 'Output "\u2423Paris" (p=' + f"{n['token_prob']:.3f})" for n in data["nodes"]
    )
    html = page.read_text(encoding="utf-8")
    _clean([html, render(page).text])
    graph_data = json.loads(re.search(r'id="tl-graph">(.*?)</script>', html, re.S).group(1))
    assert graph_data["tokens"] == [visible(t) for t in expected_texts(lens, ids)]
    assert "\u2423Paris" in graph_data["nodes"]["token"]  # the logit node
    # a target given by id (id:N) is the same logit
    paris = lens.tokenizer(" Paris", add_special_tokens=False)["input_ids"]
    assert len(paris) == 1
    assert main([*args[:-4], "--target", f"id:{paris[0]}", "--out", str(tmp_path / "o2")]) == 0
    assert "top logit: '\u2423Paris'" in capsys.readouterr().out
    # `tl-clt intervene`: the prompt as running text, top tokens and continuations decoded
    ivs = ["--feature", "0:1", "--scale", "-4", "--mode", "constrained", "--generate", "3"]
    assert main(["intervene", PROMPT, "--model", str(model_dir), "--clt", str(clt_dir), *ivs]) == 0
    printed = capsys.readouterr().out
    _clean([printed])
    assert f"prompt: {visible(lens.decode(ids), spaces=False)}" in printed
    logits = lens.model(lens.tokens(PROMPT))[0, -1]
    assert visible(expected_texts(lens, [int(logits.argmax())])[0]) in printed


def test_text_targets_of_several_tokens_are_refused_everywhere(bpe, tmp_path, capsys):
    rm, _, _ = bpe
    lens = rm.lens
    parts = lens.tokenizer.tokenize(MULTI)
    assert len(parts) == 2  # " Z" + first byte of "ü", last byte + "rich"
    ids = lens.tokenizer.convert_tokens_to_ids(parts)
    named = ", ".join(f"{visible(t)!r} (id {i})" for t, i in zip(expected_texts(lens, ids), ids))
    message = f"target {MULTI!r} is 2 tokens, not one: {named}"
    calls = {
        "attribute": lambda: attribute(rm, PROMPT, targets=[MULTI]),
        "attribute, one text": lambda: attribute(rm, PROMPT, targets=MULTI),
        "logit difference": lambda: attribute(rm, PROMPT, targets=LogitDifference(MULTI, " Paris")),
        "feature_effects": lambda: feature_effects(
            rm, PROMPT, Intervention(0, 0, scale=0.0), targets=[MULTI]
        ),  # fmt: skip
        "generate": lambda: generate(rm, PROMPT, max_new_tokens=2, stop=[MULTI]),
    }
    for where, call in calls.items():
        with pytest.raises(InputError) as err:
            call()
        assert message in str(err.value) and "id:N" in str(err.value), where
    # one token given as text is that token (as encoded on its own: " Paris" is not "Paris"),
    # never split into characters
    for text, symbol in ((" Paris", "\u0120Paris"), ("\n", "\u010a")):
        graph = attribute(rm, PROMPT, targets=text)
        (node,) = [graph.nodes[i] for i in graph.indices(NodeKind.LOGIT)]
        assert node.token_id == _vocab_id(lens, symbol) and node.token == text
    assert "Paris" not in lens.tokenizer.get_vocab()  # "Paris" alone is two tokens: refused
    with pytest.raises(InputError, match="target 'Paris' is 2 tokens"):
        attribute(rm, PROMPT, targets=["Paris"])
    diff = attribute(rm, PROMPT, targets=LogitDifference(" Paris", " Tokyo"))
    (node,) = [diff.nodes[i] for i in diff.indices(NodeKind.LOGIT)]
    assert (node.token_id, node.negative_id) == (
        _vocab_id(lens, "ĠParis"),
        _vocab_id(lens, "ĠTokyo"),
    )
    assert (
        node.token == "\u2423Paris - \u2423Tokyo"
        and node.label() == "logit '\u2423Paris - \u2423Tokyo'"
    )
    effects = feature_effects(rm, PROMPT, Intervention(0, 0, scale=0.0), targets=" Paris")
    assert [e.token_id for e in effects.logits] == [_vocab_id(lens, "ĠParis")]
    # the command line: exit code 2 and the same message
    model_dir, clt_dir = tmp_path / "model", tmp_path / "clt"
    save_bpe_model(model_dir)
    clt_for(load_model(model_dir), n_features=16).save_pretrained(clt_dir)
    base = [
        "trace",
        PROMPT,
        "--model",
        str(model_dir),
        "--clt",
        str(clt_dir),
        "--out",
        str(tmp_path / "o"),
    ]
    for extra in (["--target", MULTI], ["--logit-diff", MULTI, " Paris"]):
        assert main([*base, *extra]) == 2
        assert message in capsys.readouterr().err
    assert main([*base, "--target", "id:x"]) == 2
    assert "write id:N" in capsys.readouterr().err
