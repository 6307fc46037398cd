"""Feature pages: escaping helpers, and, in headless Chromium, a feature browser and a
circuitsvis card built from a model whose vocabulary holds hostile token strings: the strings
render as text, nothing they carry runs, and the pages need no network."""

from __future__ import annotations

import html as html_module
import json
import re

import pytest
import torch
from browser import render
from conftest import random_clt

from tl_clt import ReplacementModel, build_feature_index
from tl_clt.labels import IndexConfig
from tl_clt.lens import from_hf
from tl_clt.lens.build import tiny_hf_model
from tl_clt.tokenization import word_level_tokenizer
from tl_clt.viz import Page, Panel, colored_tokens, escape
from tl_clt.viz.features import feature_browser, feature_card

SCRIPT = "<script>alert(1)</script>"
IMG = "<img/src=x/onerror=document.body.setAttribute('data-pwned','1')>"
CLOSE = "</script><b>bold</b>"
HOSTILE = (SCRIPT, IMG, CLOSE, "&amp;", "\u2028")


def test_script_json_cannot_leave_its_element():
    value = {"t": list(HOSTILE), "k": "<!--"}
    out = escape.script_json(value)
    assert not re.search(r"[<>&\u2028]", out)
    assert json.loads(out) == value
    assert (
        escape.inline_js('x = "</script>"; y = "</SCRIPT"') == 'x = "<\\/script>"; y = "<\\/SCRIPT"'
    )
    with pytest.raises(ValueError):
        escape.inline_js("a <!-- b")
    assert escape.tokens(["<b>", "a&b", '"']) == ["&lt;b&gt;", "a&amp;b", "&quot;"]


def test_pages_forbid_the_network():
    html = Page("t <x>", body="<p>hi</p>", scripts=["var a = 1;"], data={"d": [SCRIPT]}).html()
    assert (
        "default-src 'none'" in html_module.unescape(html) and "<title>t &lt;x&gt;</title>" in html
    )
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", html)
    assert html.count("<script") == 2  # the data element and the one script
    frame = Page("t", data={"d": [SCRIPT]})._repr_html_()  # notebooks: the page in an iframe
    assert frame.startswith("<iframe srcdoc=") and "<script" not in frame
    assert html_module.unescape(frame.split('"')[1]) == Page("t", data={"d": [SCRIPT]}).html()


@pytest.fixture(scope="module")
def hostile_index(tmp_path_factory):
    """An index over a tiny model whose vocabulary holds hostile token strings."""
    tmp = tmp_path_factory.mktemp("viz")
    words = [SCRIPT, IMG, CLOSE, "&amp;"] + [f"w{i}" for i in range(40)]
    tok = word_level_tokenizer(words, tmp / "tok")
    lens = from_hf(
        tiny_hf_model("gpt2", n_layers=2, d_model=32, d_vocab=len(tok)), tok, name="hostile"
    )
    clt = random_clt(2, 32, n_features=6, model=lens.identity())
    ids = [tok.convert_tokens_to_ids(w) for w in words[:4]]
    tokens = torch.randint(7, len(tok), (24, 10), generator=torch.Generator().manual_seed(0))
    tokens[:, 3:7] = torch.tensor(ids)  # every context holds the hostile strings
    index = build_feature_index(
        ReplacementModel(lens, clt),
        tokens,
        tmp / "h.db",
        IndexConfig(k=4, n_pool=40),
        progress=False,
    )
    return index, tmp


def _check_safe(dom, n_scripts):
    assert not dom.has_attribute("data-pwned")  # the img's handler never ran
    assert len(dom.elements("script")) == n_scripts  # no script element was injected
    assert dom.elements("b") == []  # nor any markup
    for s in (SCRIPT, IMG, CLOSE):
        assert s in dom.text  # each hostile string shows as text


def test_feature_browser_renders_hostile_tokens_as_text(hostile_index):
    index, tmp = hostile_index
    layer, feature = index.live_features()[0]
    path = feature_browser(index).save(tmp / "browser.html")
    dom = render(path, fragment=f"{layer}:{feature}")
    _check_safe(dom, n_scripts=3)
    detail = dom.html[dom.html.index('id="detail"') :]
    assert f'data-feature="{layer}:{feature}"' in detail  # the #L:F feature is open
    label = index.label(layer, feature).text
    assert label in dom.text and f"feature {layer}:{feature}" in dom.text
    assert len(dom.html.split('class="ctx"')) - 1 == len(index.examples(layer, feature, "top")) > 0


def test_circuitsvis_card_renders_hostile_tokens_as_text(hostile_index):
    index, tmp = hostile_index
    layer, feature = index.live_features()[0]
    card = feature_card(index, layer, feature)
    dom = render(card.save(tmp / "card.html"))
    _check_safe(dom, n_scripts=2)  # the circuitsvis bundle, and the render calls
    assert index.label(layer, feature).text in dom.text  # circuitsvis shows the label as text
    assert "Samples" in dom.text  # circuitsvis rendered its component
    frag = card._repr_html_()
    assert (
        frag.count("CircuitsVis.render(") == len(card.items) and frag.count("var CircuitsVis=") == 1
    )
    panel = Panel().add(colored_tokens(list(HOSTILE), [1.0] * len(HOSTILE)))
    dom = render(panel.save(tmp / "tokens.html"))
    _check_safe(dom, n_scripts=2)
