"""The run lock of each warehouse kind (loaders.runlock): one holder at a time, a second comer
waits its bounded time and then names the holder; a dead holder never blocks for good.

DuckDB's file lock and PostgreSQL's advisory lock are tested as they run. Redshift's lease row
is tested on PostgreSQL (no Redshift is reachable here): the same SQL with PostgreSQL's now().
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from loaders import runlock
from loaders.config import Settings
from loaders.errors import RunLocked
from tests.conftest import postgres_settings


class _LeaseOnPostgres(runlock._LeaseLock):
    now_sql = "now()"


def _settings(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    settings = Settings.from_env({}, workdir=tmp_path / "work")
    if kind != "duckdb":
        settings = postgres_settings(settings, request.getfixturevalue("pg_database"))
    return settings.model_copy(update={"lock_wait_seconds": 1.5})


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_a_second_comer_waits_then_names_the_holder(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = _settings(kind, tmp_path, request)
    said: list[str] = []
    with runlock.run_lock(settings, "first run"):
        started = time.monotonic()
        with (
            pytest.raises(RunLocked) as locked,
            runlock.run_lock(settings, "second run", progress=said.append),
        ):
            pass
        waited = time.monotonic() - started
    assert 1.4 <= waited < 10, waited
    assert said and "waiting for the run lock" in said[0]
    message = str(locked.value)
    assert "another run holds the run lock" in message and "\n" not in message
    assert ("first run" if kind == "duckdb" else "music-elt pid") in message, message
    with runlock.run_lock(settings, "third run", wait_seconds=0):  # released: free again
        pass


def test_the_redshift_lease_row_excludes_and_expires(
    pg_database: dict[str, Any], tmp_path: Path
) -> None:
    settings = postgres_settings(Settings.from_env({}, workdir=tmp_path), pg_database)
    first = _LeaseOnPostgres(settings, runlock.holder_description("first run"))
    second = _LeaseOnPostgres(settings, runlock.holder_description("second run"))
    assert first.try_acquire() is None
    try:
        other = second.try_acquire()
        assert other is not None and "first run" in other
    finally:
        first.release()
    assert second.try_acquire() is None
    # a holder killed with -9 neither renews nor releases: once its lease ran out, the lock is
    # free
    second._stop.set()
    assert second._renewer is not None
    second._renewer.join()
    with psycopg2.connect(**pg_database) as conn, conn.cursor() as cur:
        cur.execute("update raw_meta.run_lock set expires_at = now() - interval '1 second'")
    conn.close()
    third = _LeaseOnPostgres(settings, runlock.holder_description("third run"))
    assert third.try_acquire() is None
    third.release()
    with psycopg2.connect(**pg_database) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from raw_meta.run_lock")
        assert cur.fetchone() == (0,)
    conn.close()
