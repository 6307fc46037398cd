"""circuitsvis, offline: its JavaScript bundle (`circuitsvis/dist/cdn/iife.js`) inlined once
per page, one `CircuitsVis.render(id, CircuitsVis.<Component>, props)` call per
visualisation, and every token escaped before it reaches circuitsvis (which writes token
strings into the page as raw HTML).

Build visualisations with the constructors here (`colored_tokens`, `text_neuron_activations`,
`topk_samples`): they escape the tokens. `Panel` gathers several into one HTML fragment (for
notebooks, `_repr_html_`) or one standalone page (`page()`, `save()`).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from tl_clt.viz import escape
from tl_clt.viz.page import Page, element_id

_COMPONENT_RE = re.compile(r"^[A-Z][A-Za-z0-9]*$")


@cache
def bundle() -> str:
    """circuitsvis's browser bundle, made safe to inline (read once from the installed package)."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.is_file():
        raise FileNotFoundError(
            f"circuitsvis's bundle is missing at {path}; reinstall circuitsvis (pip install "
            "--force-reinstall circuitsvis)"
        )
    return escape.inline_js(path.read_text(encoding="utf-8"))


class Vis(NamedTuple):
    """One circuitsvis component and its props (tokens already escaped)."""

    component: str
    props: dict[str, Any]


def _floats(values: Any) -> Any:
    if hasattr(values, "tolist"):
        values = values.tolist()
    return values


def colored_tokens(tokens: Sequence[str], values: Any, **options: Any) -> Vis:
    """Tokens coloured by one value each (circuitsvis `ColoredTokens`); options such as
    `minValue`, `maxValue`, `positiveColor` pass through."""
    return Vis(
        "ColoredTokens", {"tokens": escape.tokens(tokens), "values": _floats(values), **options}
    )


def text_neuron_activations(tokens: Sequence[str], activations: Any, **options: Any) -> Vis:
    """Tokens with activations [pos, layers, neurons] (circuitsvis `TextNeuronActivations`)."""
    return Vis(
        "TextNeuronActivations",
        {"tokens": escape.tokens(tokens), "activations": _floats(activations), **options},
    )


def topk_samples(
    samples: Sequence[Sequence[str]],
    activations: Sequence[Any],
    title: str = "Feature",
    label: str | None = None,
) -> Vis:
    """Several token windows with their activations, as one neuron of circuitsvis
    `TopkSamples` (the samples in the order given). circuitsvis writes tokens as raw HTML
    (escaped here) but the title and label as text (passed as they are)."""
    return Vis(
        "TopkSamples",
        {
            "tokens": [[[escape.tokens(s) for s in samples]]],
            "activations": [[[_floats(a) for a in activations]]],
            "zerothDimensionName": str(title),
            "firstDimensionName": "",
            "zerothDimensionLabels": [str(label or title)],
            "firstDimensionLabels": [""],
        },
    )


def mount(vis: Vis, target_id: str) -> str:
    """The JavaScript statement that renders `vis` into the element `target_id`."""
    if not _COMPONENT_RE.match(vis.component):
        raise ValueError(f"not a circuitsvis component name: {vis.component!r}")
    return (
        f"CircuitsVis.render({escape.script_json(element_id(target_id))}, "
        f"CircuitsVis.{vis.component}, {escape.script_json(vis.props)});"
    )


@dataclass
class Panel:
    """Visualisations under optional headings (trusted HTML, built with `escape.text`)."""

    items: list[tuple[str, Vis]] = field(default_factory=list)
    title: str = "circuitsvis"
    header: str = ""

    def add(self, vis: Vis, heading: str = "") -> Panel:
        self.items.append((heading, vis))
        return self

    def _parts(self) -> tuple[str, str]:
        prefix = "cv-" + uuid.uuid4().hex[:12]
        body, calls = [self.header], []
        for i, (heading, vis) in enumerate(self.items):
            target = f"{prefix}-{i}"
            body.append(f'{heading}<div id="{target}" style="margin:8px 0"></div>')
            calls.append(mount(vis, target))
        return "\n".join(body), "\n".join(calls)

    def fragment(self) -> str:
        """HTML for a notebook cell: the bundle inlined once, then one render call per item."""
        body, calls = self._parts()
        return f"<div>{body}</div><script>{bundle()}\n{escape.inline_js(calls)}</script>"

    def page(self) -> Page:
        body, calls = self._parts()
        return Page(title=self.title, body=body, scripts=[bundle(), calls])

    def save(self, path: str | os.PathLike) -> Path:
        return self.page().save(path)

    def _repr_html_(self) -> str:
        return self.fragment()
