"""Headless Chromium for tests that must see a page as a browser renders it (Debian's
`chromium`, installed by `make browser`). A test that needs it fails when it is missing: the
HTML safety checks must never be skipped silently. `render` dumps a page's DOM once; `Browser`
drives a page over the DevTools protocol (clicks, JavaScript, timings, screenshots).

    from browser import render
    dom = render(path)          # the DOM after scripts ran (Chromium's --dump-dom)
    dom.text                    # visible text (script and style contents left out)
    dom.elements("script")      # elements by tag, each a dict of attributes
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
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


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`,
    messages are JSON ended by NUL), for tests and benchmarks that click, time or screenshot:

        with Browser() as b:
            b.open(path, fragment="node=1_2_3")
            b.click_selector('[data-node="1_2_3"]')
            text = b.eval("document.getElementById('detail').textContent")
    """

    def __init__(self, width: int = 1400, height: int = 900) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="tl_clt_chromium_")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def child_fds() -> None:  # the browser reads fd 3 and writes fd 4
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        cmd = [chromium(), *FLAGS, f"--user-data-dir={self._profile.name}", "--remote-debugging-pipe",
               f"--window-size={width},{height}", "--hide-scrollbars", "about:blank"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, preexec_fn=child_fds, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer, self._id, self.events, self.frames = b"", 0, [], []
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.call("Target.setAutoAttach",
                  {"autoAttach": True, "waitForDebuggerOnStart": False, "flatten": True})  # fmt: skip
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip

    # -------------------------------------------------------------- protocol
    def _read(self, timeout: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], timeout)
            if not ready:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if message.get("method") == "Target.attachedToTarget":  # an iframe's own process
            params = message["params"]
            if params["targetInfo"].get("type") == "iframe":
                self.frames.append(params["sessionId"])
        return message

    def _call(self, method: str, params: dict | None = None, session: str | None = None,
              timeout: float = 60) -> dict:  # fmt: skip
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def call(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        return self._call(method, params, self._session, timeout)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        """The next protocol event called `event` (earlier ones are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            for k, ev in enumerate(self.events):
                if ev.get("method") == event:
                    del self.events[: k + 1]
                    return ev
            self.events.clear()
            self.events.append(self._read(max(0.01, deadline - time.monotonic())))

    # -------------------------------------------------------------- pages
    def open(self, page: str | os.PathLike, fragment: str = "", timeout: float = 60) -> None:
        """Load a local HTML file (optionally at `#fragment`) and wait for its load event."""
        self._loads = getattr(self, "_loads", 0) + 1  # a new query: a new document every time
        url = Path(page).resolve().as_uri() + f"?load={self._loads}"
        url += f"#{fragment}" if fragment else ""
        self.events.clear()
        self.frames.clear()
        self.call("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired", timeout)

    def eval(self, expression: str, timeout: float = 60):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, timeout)  # fmt: skip
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def frame_eval(self, expression: str, timeout: float = 60):
        """The value of an expression in the page's first iframe (Chromium runs a sandboxed
        iframe in a process of its own: it is reached through its own DevTools session)."""
        deadline = time.monotonic() + timeout
        while not self.frames:
            if time.monotonic() > deadline:
                raise AssertionError("the page has no iframe")
            self.events.append(self._read(max(0.01, deadline - time.monotonic())))
        result = self._call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                            self.frames[0], timeout)  # fmt: skip
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, x: float, y: float) -> None:
        """A real mouse click (move, press, release) at page coordinates."""
        self.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent",
                      {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})  # fmt: skip

    def click_selector(self, selector: str) -> None:
        """Scroll the element into view and click its centre."""
        box = self.eval(
            f"(function () {{ var e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'center', inline: 'center'});"
            " var r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        if box is None:
            raise AssertionError(f"no element matches {selector}")
        self.click(*box)

    def screenshot(self, path: str | os.PathLike) -> Path:
        """A PNG of the viewport."""
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(RuntimeError, TimeoutError, OSError):
                self._call("Browser.close", timeout=10)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
