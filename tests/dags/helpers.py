"""Shared helpers of the DAG tests (no Airflow import at module level)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
DBT_PROJECT = REPO / "dbt_project"
DAG_ID = "music_streaming_pipeline"
POOL = "music_elt_duckdb"


def load_dag() -> Any:
    """Parse the DAG folder as the scheduler does; fail on any import error."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[DAG_ID]


def import_dag_module() -> Any:
    """Import the DAG file as a plain module (its helpers, notifier and profile builders)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "music_streaming_pipeline_under_test", DAGS / "music_streaming_pipeline.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def task_states(dag_run: Any) -> dict[str, list[str]]:
    """State of each task of a DAG run (one entry per mapped instance)."""
    states: dict[str, list[str]] = {}
    for ti in dag_run.get_task_instances():
        states.setdefault(ti.task_id, []).append(str(ti.state))
    return states


def read_marts(duckdb_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of the three KPI marts, as dicts, sorted."""
    import duckdb

    from tests.kpi_reference import MARTS

    marts = {}
    with duckdb.connect(str(duckdb_path)) as conn:  # same config as dbt-duckdb in-process
        for mart in MARTS:
            cur = conn.execute(f"select * from marts.{mart}")
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            marts[mart] = sorted(rows, key=lambda r: tuple(str(v) for v in r.values()))
    return marts


def assert_marts_match_reference(
    marts: dict[str, list[dict[str, Any]]], data_dir: Path, stream_files: list[Path]
) -> None:
    """The marts equal the independent computation of tests/kpi_reference.py."""
    from datetime import UTC, datetime

    from tests.kpi_reference import MARTS, assert_rows_match, compute_kpis

    expected = compute_kpis(
        data_dir / "users.csv",
        data_dir / "songs.csv",
        stream_files,
        loaded_at=datetime.now(UTC).replace(tzinfo=None),
    )
    for mart, spec in MARTS.items():
        assert_rows_match(
            expected.rows(mart), marts[mart], key=spec.key, columns=spec.columns, label=mart
        )


@contextmanager
def webhook_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A Slack-like incoming webhook on loopback: yields its URL and the JSON bodies posted."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXX", received
    finally:
        server.shutdown()
        server.server_close()
