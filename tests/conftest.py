"""Shared fixtures: a real PostgreSQL (pgserver) and an S3 protocol server (moto) on loopback.

Both are started by the tests themselves, once per test process, and stopped at its end.
"""

from __future__ import annotations

import socket
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from loaders import rds
from loaders.config import Settings, WarehouseSettings
from loaders.demo.embedded import embedded_server

REPO = Path(__file__).resolve().parent.parent
# Settings without MUSIC_ELT_RDS_DSN reach the embedded stand-in, as under the CLI
rds.serve_embedded(embedded_server)


def pytest_configure(config: pytest.Config) -> None:
    """Keep temporary folders out of /tmp/pytest-of-<user>: pytest makes that folder private
    again whenever a worker starts, which locks pgserver's unprivileged server user out of the
    data directories of servers already running. A --basetemp of our own is left alone."""
    if not config.option.basetemp and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix="music-elt-tests-")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A PostgreSQL 16 server from the pgserver wheel, on a Unix socket in a temporary folder."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server
    server.cleanup()


def new_database(server: Any) -> dict[str, Any]:
    """A fresh, empty database on the test server; connection fields as a dict."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(server.get_uri())
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"create database {name}")
    info = admin.get_dsn_parameters()
    admin.close()
    return {"host": info["host"], "port": int(info["port"]), "user": info["user"], "dbname": name}


@pytest.fixture
def pg_database(pg_server: Any) -> dict[str, Any]:
    """A fresh, empty database on the test server (:func:`new_database`)."""
    return new_database(pg_server)


def pg_dsn(db: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in db.items())


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server in server mode on 127.0.0.1 (a real HTTP endpoint, S3 protocol)."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new empty bucket on the moto server; returns its name. Test-only fake credentials."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"bucket-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded-stack settings in a temporary work directory (DuckDB warehouse)."""
    return Settings.from_env({}, workdir=tmp_path / "work")


def postgres_settings(base: Settings, db: dict[str, Any]) -> Settings:
    """``base`` with its warehouse switched to the PostgreSQL database ``db``."""
    return base.model_copy(
        update={
            "warehouse": WarehouseSettings(
                kind="postgres",
                host=db["host"],
                port=db["port"],
                user=db["user"],
                dbname=db["dbname"],
            )
        }
    )


# a password the pgserver's trust authentication ignores: Cosmos's dbt profile needs one
PG_TEST_PASSWORD = "unused-by-trust-auth"


def postgres_conn_env(db: dict[str, Any], conn_id: str = "postgres_conn") -> dict[str, str]:
    """The Airflow connection ``conn_id`` (a PostgreSQL database ``db``) as the environment
    variable Airflow reads connections from: how the DAG's tests give it its warehouse."""
    import json

    fields = {
        "conn_type": "postgres",
        "host": db["host"],
        "port": int(db["port"]),
        "login": db["user"],
        "password": PG_TEST_PASSWORD,
        "schema": db["dbname"],
    }
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(fields)}
