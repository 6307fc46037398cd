"""Headless Chromium for tests that must see a page as a browser renders it (Debian's
`chromium`, installed by `make browser`). A test that needs it fails when it is missing: the
HTML safety checks must never be skipped silently.

    from browser import render
    dom = render(path)          # the DOM after scripts ran (Chromium's --dump-dom)
    dom.text                    # visible text (script and style contents left out)
    dom.elements("script")      # elements by tag, each a dict of attributes
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
)  # fmt: skip


def chromium() -> str:
    """Path of the Chromium binary; fails the test (never skips) when there is none."""
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name) if name else None
        if path:
            return path
    pytest.fail("headless Chromium is required for this test and was not found; run `make browser` "
                "(apt-get install -y chromium) or set CHROMIUM=/path/to/chromium")  # fmt: skip


@dataclass
class Dom:
    """A rendered DOM, parsed: its HTML, visible text, and elements with their attributes."""

    html: str
    text: str = ""
    tags: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def elements(self, tag: str) -> list[dict[str, str]]:
        return [attrs for t, attrs in self.tags if t == tag]

    def has_attribute(self, name: str) -> bool:
        return any(name in attrs for _, attrs in self.tags)


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str]]] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


def render(
    page: str | os.PathLike, fragment: str = "", budget_ms: int = 5000, timeout: float = 90
) -> Dom:
    """Open a local HTML file (optionally at `#fragment`) in headless Chromium and return the
    DOM after its scripts have run."""
    url = Path(page).resolve().as_uri() + (f"#{fragment}" if fragment else "")
    with tempfile.TemporaryDirectory(prefix="tl_clt_chromium_") as profile:
        cmd = [
            chromium(),
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            url,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"chromium failed (rc={proc.returncode}): {proc.stderr[-2000:]}")
    parser = _Parser()
    parser.feed(proc.stdout)
    return Dom(proc.stdout, "".join(parser.text), parser.tags)
