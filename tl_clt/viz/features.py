"""Feature pages: a circuitsvis card of one feature's contexts (for notebooks) and a
single-file HTML browser of every feature of a feature index (search by label, layer or
"L:F"; open `page.html#L:F` to land on a feature).

`feature_payload` turns index features into compact JSON-able data (a shared token table,
windows as token indices and activations) that other pages (graph pages) can embed and draw
with the same browser script functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tl_clt.tokenization import visible
from tl_clt.viz import circuitsvis as cv
from tl_clt.viz import escape
from tl_clt.viz.page import Page, static


def feature_card(index, layer: int, feature: int, n: int = 10) -> cv.Panel:
    """A circuitsvis panel: the label and statistics, the top contexts, weaker contexts."""
    s = index.stats(layer, feature)
    lab = index.label(layer, feature)
    text = lab.text if lab else "(no label)"
    score = ""
    if lab is not None and lab.score is not None:
        score = f" · detection {lab.score.score:.2f} (chance {lab.score.chance:.2f})"
    header = (
        f"<h3>feature {layer}:{feature} — {escape.text(text)}</h3>"
        f"<p>density {s.density:.3g} · max {s.max_act:.3f}{escape.text(score)}</p>"
    )
    panel = cv.Panel(title=f"feature {layer}:{feature}", header=header)
    add_spaces = index.separator == " "
    for kind, heading in (("top", "top contexts"), ("sample", "weaker contexts (strongest first)")):
        examples = index.examples(layer, feature, kind)[:n]
        if examples:
            windows = [spaced(e.tokens, add_spaces) for e in examples]
            vis = cv.topk_samples(windows, [e.acts for e in examples], f"{layer}:{feature}", text)
            panel.add(vis, f"<h4>{escape.text(heading)}</h4>")
    return panel


def spaced(tokens: tuple[str, ...], add: bool) -> list[str]:
    """The tokens of a context as running text (a space between words of a word-level
    vocabulary), with newlines and other control characters visible."""
    return [visible(" " + t if i and add else t, spaces=False) for i, t in enumerate(tokens)]


def feature_payload(
    index, features: Iterable[tuple[int, int]], n_examples: int = 5
) -> dict[str, Any]:
    """Compact data for the features: {"tokens": [...], "features": [...]} where each feature
    is {"id": "L:F", "layer", "feature", "label", "score", "above", "density", "max",
    "examples": [[value, [token index...], [activation...], peak]], "promote"/"suppress":
    [[token index, value, z]], "hist": [...]} and token indices point into "tokens"."""
    table: dict[int, int] = {}
    tokens: list[str] = []

    def tok(i: int) -> int:
        if i not in table:
            table[i] = len(tokens)
            tokens.append(index.vocab[i])
        return table[i]

    out = []
    for layer, feature in features:
        s = index.stats(layer, feature)
        lab = index.label(layer, feature)
        examples = index.examples(layer, feature, "top")[:n_examples]
        logits = index.logit_effects(layer, feature)
        eff = lambda es: [[tok(e.token_id), round(e.value, 3), round(e.z, 1)] for e in es[:5]]  # noqa: E731
        out.append({
            "id": f"{layer}:{feature}", "layer": layer, "feature": feature,
            "label": lab.text if lab else "",
            "score": None if lab is None or lab.score is None else round(lab.score.score, 3),
            "above": bool(lab and lab.score and lab.score.above_chance),
            "density": s.density, "max": round(s.max_act, 4),
            "examples": [[round(e.value, 4), [tok(i) for i in e.token_ids],
                          [round(a, 3) for a in e.acts], e.peak] for e in examples],
            "promote": eff(logits.promote), "suppress": eff(logits.suppress),
            "hist": list(s.hist),
        })  # fmt: skip
    return {"tokens": tokens, "features": out}


_BODY = """
<header><h1 id="title"></h1><p id="subtitle"></p></header>
<div id="controls">
  <input id="search" type="search" placeholder="search labels, or L:F" autocomplete="off">
  <select id="layer"><option value="">all layers</option></select>
  <label><input id="above" type="checkbox"> above chance only</label>
  <span id="count"></span>
</div>
<main><ol id="results"></ol><section id="detail"><p class="hint">choose a feature</p></section></main>
"""


def feature_browser(
    index,
    features: Iterable[tuple[int, int]] | None = None,
    n_examples: int = 5,
    title: str | None = None,
) -> Page:
    """One HTML file browsing `features` (default: every live feature) of `index`."""
    feats = list(features) if features is not None else index.live_features()
    data = feature_payload(index, feats, n_examples)
    data["meta"] = {
        "title": title or f"features of {index.path.name}",
        "n_layers": index.n_layers,
        "n_features": index.n_features,
        "n_tokens": index.n_tokens,
        "n_live": index.n_live(),
        "hist_edges": index.meta["identity"]["hist_edges"],
    }
    return Page(
        title=data["meta"]["title"],
        body=_BODY,
        css=[static("features.css")],
        scripts=[static("features.js"), "TLFeatures.browser(TLFeatures.data('tl-features'));"],
        data={"tl-features": data},
    )
