"""Headless Chromium (Debian's ``chromium`` package) driven over the DevTools protocol: load a
dashboard page, wait until Streamlit has drawn it, read the DOM, take a screenshot. Used by the
browser test and to make the README's screenshots:

    make dashboard WORKDIR=.music-elt &
    .venv/bin/python -m dashboard.browser --url http://127.0.0.1:8501 --out dashboard/screenshots

Streamlit draws the page in the browser from messages on a websocket after the HTML has loaded,
so "page loaded" means nothing here; :meth:`Chromium.open` waits instead for the app to be
connected with its script finished and every chart drawn (what Streamlit's own browser tests
wait for: ``data-test-script-state="notRunning"``).
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from html.parser import HTMLParser
from pathlib import Path
from types import TracebackType
from typing import Any

INSTALL_HINT = "apt-get update && apt-get install -y chromium"
PAGES = {
    "overview": "",
    "genres": "genres",
    "hours": "hours",
    "data_quality": "data_quality",
    "revisions": "revisions",
    "pipeline": "pipeline",
}
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)
# True once the app is connected, its script has finished and every visible chart is drawn.
_DRAWN = """(() => {
    const app = document.querySelector(
        '[data-testid="stApp"][data-test-connection-state="CONNECTED"]'
        + '[data-test-script-state="notRunning"]');
    if (!app || !document.querySelector('[data-testid="stMainBlockContainer"] h1')) return false;
    if (document.querySelector('[data-testid="stSkeleton"]')) return false;
    const charts = [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
        .filter(chart => chart.getClientRects().length > 0);  // not in a hidden tab
    return charts.every(chart => chart.querySelector('canvas, svg.marks'));
})()"""
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def chromium() -> str | None:
    """The Chromium executable on PATH, if any."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """One headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, *, size: tuple[int, int] = (1400, 1000), timeout: float = 60) -> None:
        self.size = size
        self.timeout = timeout
        self._ids = 0

    def __enter__(self) -> Chromium:
        from websockets.sync.client import connect

        executable = chromium()
        if executable is None:
            raise FileNotFoundError(f"chromium is not installed: {INSTALL_HINT}")
        self._closing = ExitStack()
        self._profile = tempfile.TemporaryDirectory(
            prefix="music-elt-chromium-", ignore_cleanup_errors=True
        )
        width, height = self.size
        self._process = subprocess.Popen(
            [
                executable,
                *_FLAGS,
                f"--user-data-dir={self._profile.name}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port = self._devtools_port(Path(self._profile.name) / "DevToolsActivePort")
            with _LOCAL.open(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
                targets = json.load(answer)
            page = next(t for t in targets if t.get("type") == "page")
            self._socket = self._closing.enter_context(
                connect(page["webSocketDebuggerUrl"], proxy=None, max_size=None, open_timeout=10)
            )
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop()

    def _devtools_port(self, marker: Path) -> int:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self._process.returncode}")
            if marker.is_file() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def _stop(self) -> None:
        self._closing.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        for _attempt in range(20):  # helper processes may write for a moment after the exit
            self._profile.cleanup()
            if not Path(self._profile.name).exists():
                break
            time.sleep(0.1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events are skipped)."""
        self._ids += 1
        self._socket.send(json.dumps({"id": self._ids, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv(timeout=self.timeout))
            if message.get("id") == self._ids:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def open(self, url: str, *, settle: float = 0.5) -> None:
        """Load ``url`` and wait until Streamlit has drawn it (then ``settle`` seconds more for
        chart animations)."""
        self.evaluate("window.__previousDocument = true")
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + self.timeout
        # the previous document answers until the new one replaces it
        while not self.evaluate(f"!window.__previousDocument && {_DRAWN}"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} was not drawn within {self.timeout:.0f} s")
            time.sleep(0.2)
        time.sleep(settle)

    def html(self) -> str:
        """The current DOM as HTML."""
        return str(self.evaluate("document.documentElement.outerHTML"))

    def screenshot(self, path: Path) -> Path:
        """A PNG of the viewport."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


class _Rows(HTMLParser):
    """Text of the cells of every table row in a document."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th") and self.rows:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_rows(html: str) -> list[list[str]]:
    """The cell texts of each ``<tr>`` in ``html`` (HTML tables: ``st.table``)."""
    parser = _Rows()
    parser.feed(html)
    return parser.rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dashboard.browser", description="Screenshot every dashboard page."
    )
    parser.add_argument("--url", default="http://127.0.0.1:8501", help="the running dashboard")
    parser.add_argument("--out", default="dashboard/screenshots", help="folder for the PNGs")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args(argv)
    if chromium() is None:
        print(f"chromium is not installed: {INSTALL_HINT}", file=sys.stderr)
        return 2
    with Chromium(size=(args.width, args.height)) as browser:
        for name, path in PAGES.items():
            browser.open(f"{args.url.rstrip('/')}/{path}")
            print(f"wrote {browser.screenshot(Path(args.out) / f'{name}.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
