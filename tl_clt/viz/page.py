"""Self-contained HTML pages: one file with its CSS, JavaScript and data inlined, no network
(a Content-Security-Policy forbids any fetch), shown inline in Jupyter through `_repr_html_`.

A page is assembled from trusted parts (our own CSS and JavaScript, fragments built with
`tl_clt.viz.escape`) and untrusted data, which only ever enters as JSON in a
`<script type="application/json">` element (read back with `JSON.parse`), escaped by
`escape.script_json`. Graph pages and feature browsers share this builder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from tl_clt.viz import escape

#: No network at all: inline scripts and styles, images only from data: URLs.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; font-src data:"
)
_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


@cache
def static(name: str) -> str:
    """A file shipped in `tl_clt/viz/static/` (CSS or JavaScript for the pages)."""
    return resources.files("tl_clt.viz").joinpath("static", name).read_text(encoding="utf-8")


def element_id(value: str) -> str:
    """`value` checked to be a plain HTML id (letters, digits, `_`, `-`)."""
    if not _ID_RE.match(value):
        raise ValueError(f"not a plain element id: {value!r}")
    return value


@dataclass
class Page:
    """An HTML document. `body` is trusted HTML (build it with `escape.text`); `data` maps
    element ids to JSON-able values inlined for the scripts (`JSON.parse(document
    .getElementById(id).textContent)`); `scripts` run in order after the body."""

    title: str
    body: str = ""
    css: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    iframe_height: int = 640

    def html(self) -> str:
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{escape.text(CSP)}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape.text(self.title)}</title>",
        ]
        parts += [f"<style>{escape.inline_css(css)}</style>" for css in self.css]
        parts.append(f"</head><body>{self.body}")
        for key, value in self.data.items():
            parts.append(
                f'<script type="application/json" id="{element_id(key)}">'
                f"{escape.script_json(value)}</script>"
            )
        parts += [f"<script>{escape.inline_js(js)}</script>" for js in self.scripts]
        parts.append("</body></html>")
        return "\n".join(parts)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the page (atomically) and return its path."""
        from tl_clt._files import atomic_write

        path = Path(path)
        atomic_write(path, lambda tmp: tmp.write_text(self.html(), encoding="utf-8"))
        return path

    def _repr_html_(self) -> str:
        """The page in a sandboxed iframe (its own document, so its scripts and styles cannot
        touch the notebook's)."""
        return (
            f'<iframe srcdoc="{escape.text(self.html())}" sandbox="allow-scripts" '
            f'style="width:100%;height:{int(self.iframe_height)}px;border:1px solid #ddd"></iframe>'
        )
