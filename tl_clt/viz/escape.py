"""Escaping for everything that reaches an HTML page: text and attribute values, JSON inlined
in a `<script>` element, and JavaScript inlined in a page. No string from a model, a corpus or
a user reaches HTML except through these functions (or through the DOM's `textContent`)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from typing import Any

_SCRIPT_UNSAFE = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_SCRIPT_UNSAFE_RE = re.compile("[<>&\u2028\u2029]")
_CLOSE_SCRIPT_RE = re.compile(r"</(script)", re.IGNORECASE)


def text(value: Any) -> str:
    """`value` as HTML text or a quoted attribute value (`<`, `>`, `&`, `"` and `'` escaped)."""
    return html.escape(str(value), quote=True)


def tokens(values: Iterable[Any]) -> list[str]:
    """Each token escaped as HTML text. circuitsvis writes token strings into the page as raw
    HTML, so every token must pass through here before it reaches circuitsvis."""
    return [text(v) for v in values]


def script_json(value: Any) -> str:
    """`value` as JSON that is safe inside a `<script>` element: no `<`, `>` or `&` can end the
    element or open a comment, and U+2028/U+2029 cannot end a JavaScript line."""
    dumped = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return _SCRIPT_UNSAFE_RE.sub(lambda m: _SCRIPT_UNSAFE[m.group(0)], dumped)


def inline_js(source: str) -> str:
    """JavaScript made safe to inline in a `<script>` element: every `</script` becomes
    `<\\/script` (the same string inside a JavaScript string literal, where such text lives in
    well-formed bundles). Refuses code holding `<!--`, which would change how HTML parses it."""
    if "<!--" in source:
        raise ValueError("refusing to inline JavaScript that contains '<!--'")
    return _CLOSE_SCRIPT_RE.sub(r"<\\/\1", source)


def inline_css(source: str) -> str:
    """CSS made safe to inline in a `<style>` element."""
    if re.search(r"</style", source, re.IGNORECASE):
        raise ValueError("refusing to inline CSS that contains '</style'")
    return source
