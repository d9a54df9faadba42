"""A real browser on `make dashboard`: headless Chromium (Debian's `chromium` package) loads the
overview and finds the latest day's most played genre with its plays; a screenshot is kept in
the test's temporary folder. Skipped, with the install command, where chromium is missing
(CI installs it: .ci/run)."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from dashboard.browser import INSTALL_HINT, Chromium, chromium, table_rows
from tests.conftest import REPO

LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
if chromium() is None and os.environ.get("MUSIC_ELT_REQUIRE_BROWSER"):  # set by .ci/run
    raise RuntimeError(f"chromium is not installed: {INSTALL_HINT}")
pytestmark = pytest.mark.skipif(
    chromium() is None, reason=f"chromium is not installed: {INSTALL_HINT}"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dashboard_url(kpi_workdir: Path, tmp_path: Path) -> Iterator[str]:
    """`make dashboard` on a free port against the built work directory."""
    port = free_port()
    log = (tmp_path / "dashboard.log").open("w")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSIC_ELT_", "WAREHOUSE_"))}
    make = ["make", "--no-print-directory", "-C", str(REPO), "dashboard"]
    server = subprocess.Popen(
        [*make, f"WORKDIR={kpi_workdir}", f"DASHBOARD_PORT={port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group: make and streamlit stop together
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "dashboard.log").read_text()
            try:
                with LOOPBACK.open(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.read().strip() == b"ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the dashboard did not start in 90 s"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()


def test_overview_renders_in_chromium(
    dashboard_url: str, marts: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    # the audited build, its KPI marts under their published names
    day, genre, plays, share = marts.execute(
        "select listen_date, track_genre, listen_count, popularity_index "
        "from marts.fct_genre_kpis_daily "
        "where listen_date = (select max(listen_date) from marts.fct_genre_kpis_daily) "
        "order by listen_count desc, track_genre limit 1"
    ).fetchone()
    (day_plays,) = marts.execute(
        "select sum(listen_count) from marts.fct_genre_kpis_daily where listen_date = ?", [day]
    ).fetchone()

    with Chromium(size=(1400, 1000)) as browser:
        browser.open(dashboard_url)
        html = browser.html()
        png = browser.screenshot(tmp_path / "overview.png")

    wanted = ["1", genre, f"{plays:,}", f"{share:.2%}"]
    rows = table_rows(html)
    assert rows[0][:4] == ["Rank", "Genre", "Plays", "Share of plays"]
    assert rows[1][:4] == wanted, f"rank 1 is not {wanted}: {rows[:3]}"
    assert f"{day.isoformat()}, the latest day in the marts" in html
    assert f">{int(day_plays):,}<" in html  # the Plays tile

    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (1400, 1000)
    assert png.stat().st_size > 20_000  # a drawn page, not a blank one


def test_revisions_and_pipeline_pages_render_in_chromium(
    dashboard_url: str, marts: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    (revised,) = marts.execute("select count(*) from raw_meta.kpi_revisions").fetchone()
    (runs,) = marts.execute("select count(*) from marts.pipeline_runs").fetchone()
    (newest,) = marts.execute("select max(listen_time) from marts.fct_listens").fetchone()
    assert revised > 0 and runs == 2

    with Chromium(size=(1400, 1000)) as browser:
        # the app's entry first: a fresh Streamlit server that is asked for a page before it
        # ran app.py (where st.navigation is declared) runs the page file alone
        browser.open(dashboard_url)
        browser.open(f"{dashboard_url}/revisions")
        revisions = browser.html()
        revisions_png = browser.screenshot(tmp_path / "revisions.png")
        browser.open(f"{dashboard_url}/pipeline")
        pipeline = browser.html()
        pipeline_png = browser.screenshot(tmp_path / "pipeline.png")

    assert ">Revisions<" in revisions and f">{revised:,}<" in revisions  # the count tile
    assert "glideDataEditor" in revisions or 'data-testid="stDataFrame"' in revisions
    assert ">Pipeline<" in pipeline
    assert f">{newest.strftime('%Y-%m-%d %H:%M')}<" in pipeline  # the newest play tile
    assert pipeline.count('data-testid="stVegaLiteChart"') == 4  # files, rows, seconds, days
    for png in (revisions_png, pipeline_png):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
