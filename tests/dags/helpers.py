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


def task_states(dag_run: Any) -> dict[str, list[str]]:
    """State of each task of a DAG run (one entry per mapped instance)."""
    states: dict[str, list[str]] = {}
    for ti in dag_run.get_task_instances():
        states.setdefault(ti.task_id, []).append(str(ti.state))
    return states


def read_marts(settings: Any) -> dict[str, list[dict[str, Any]]]:
    """Every row of the three KPI marts of the warehouse ``settings`` name, as dicts, sorted."""
    from tests.checks import published
    from tests.kpi_reference import MARTS

    marts = {}
    for mart, spec in MARTS.items():
        rows = published(settings, f"select {', '.join(spec.columns)} from marts.{mart}")
        dicts = [dict(zip(spec.columns, row, strict=True)) for row in rows]
        marts[mart] = sorted(dicts, key=lambda r: tuple(str(v) for v in r.values()))
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


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 made with openssl (for an HTTPS test server)."""
    import subprocess

    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@contextmanager
def webhook_server(
    tls: tuple[Path, Path] | None = None,
) -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """An HTTP(S) server on loopback answering like a Slack incoming webhook
    (``/services/...``) and PagerDuty's events API (``/v2/enqueue``): yields a webhook URL and
    the (path, JSON body) of each request. ``tls``: (certificate, key) to serve HTTPS."""
    received: list[tuple[str, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append((self.path, json.loads(body)))
            if self.path == "/v2/enqueue":
                answer = json.dumps({"status": "success", "dedup_key": "k", "message": "ok"})
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(answer.encode())
                return
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if tls is not None:
        import ssl

        tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_context.load_cert_chain(*tls)
        server.socket = tls_context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield f"{scheme}://127.0.0.1:{port}/services/T000/B000/XXX", received
    finally:
        server.shutdown()
        server.server_close()
