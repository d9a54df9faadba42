"""``music-elt check`` against real warehouses: DuckDB, and PostgreSQL with a privileged user,
with a user holding only the grants the README lists, and with a reader that may only read."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg2
import pytest

from loaders import check, cli, pipeline
from loaders.config import Settings
from tests.conftest import pg_dsn, postgres_settings


def _statuses(settings: Settings) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.detail) for c in check.run_checks(settings)}


def _admin(db: dict[str, Any]) -> Any:
    conn = psycopg2.connect(pg_dsn(db))
    conn.autocommit = True
    return conn


def _as_user(settings: Settings, user: str) -> Settings:
    return settings.model_copy(
        update={"warehouse": settings.warehouse.model_copy(update={"user": user})}
    )


def test_duckdb_before_the_first_run_passes_and_names_what_the_run_creates(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    found = _statuses(settings)
    assert found["connection"][0] == "ok"
    assert found["warehouse file"] == ("ok", "writable")
    assert found["schemas"][1].startswith("created by the first run: raw_streams")
    assert found["landing zone"][0] == "ok"
    assert check.main(settings) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(": 0 failed, 0 warnings")


def test_an_unreachable_bucket_fails_the_check_with_what_to_fix(
    settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    missing = settings.model_copy(
        update={"landing_url": f"s3://no-{uuid.uuid4().hex[:8]}/x", "s3_endpoint_url": s3_endpoint}
    )
    status, detail = _statuses(missing)["landing zone"]
    assert status == "FAIL" and "NoSuchBucket" in detail and "fix the bucket name" in detail
    assert check.main(missing, say=lambda line: None) == 1
    there = settings.model_copy(
        update={"landing_url": f"s3://{s3_bucket}/x", "s3_endpoint_url": s3_endpoint}
    )
    assert _statuses(there)["landing zone"][0] == "ok"


def test_postgres_privileged_user_passes_and_the_reader_role_is_checked(
    settings: Settings, pg_database: dict[str, Any]
) -> None:
    pg = postgres_settings(settings, pg_database)
    found = _statuses(pg)
    assert found["missing schemas"][0] == "ok"  # a superuser may create them
    assert found["temporary tables"][0] == "ok"
    assert found["reader role"][0] == "ok"  # none configured
    assert not [name for name, (status, _) in found.items() if status == "FAIL"]

    role = f"reader_{uuid.uuid4().hex[:8]}"
    with_reader = pg.model_copy(
        update={"warehouse": pg.warehouse.model_copy(update={"reader_role": role})}
    )
    status, detail = _statuses(with_reader)["reader role"]
    assert status == "FAIL" and f"create role {role}" in detail
    admin = _admin(pg_database)
    with admin.cursor() as cur:
        cur.execute(f"create role {role}")
        cur.execute("create schema marts")
        cur.execute("create table marts.fct_genre_kpis_daily (listen_date date)")
        cur.execute("create table marts.fct_listening_kpis_hourly (listen_hour timestamp)")
    with pipeline.warehouse(pg):  # the raw schemas and the ledger
        pass
    found = _statuses(with_reader)
    assert found["reader marts"][0] == "warn" and "lacks USAGE" in found["reader marts"][1]
    assert found["reader marts.fct_genre_kpis_daily"][0] == "warn"
    assert found["reader served"] == ("warn", "not published yet (no schema)")
    assert found["reader marts.fct_top_artists_hourly"] == ("warn", "not published yet")
    with admin.cursor() as cur:  # what the publish step grants, here on one relation only
        cur.execute(f"grant usage on schema marts to {role}")
        cur.execute(f"grant select on marts.fct_genre_kpis_daily to {role}")
    found = _statuses(with_reader)
    assert found["reader marts"] == ("ok", f"{role} has USAGE")
    assert found["reader marts.fct_genre_kpis_daily"] == ("ok", f"{role} has SELECT")
    assert found["reader marts.fct_listening_kpis_hourly"][0] == "warn"
    admin.close()


def test_postgres_the_readme_grants_make_a_loader_and_a_reader_fails_with_the_fix(
    settings: Settings, pg_database: dict[str, Any]
) -> None:
    """A new login role cannot run the pipeline: check says so with the fix and exits 1. The
    README's statements for the loader/dbt user (its schemas created with it as owner, TEMP
    on the database) make the same check pass, and that user sets up and loads a file. A user
    that may only read then fails the check, one line per missing privilege with its GRANT."""
    pg = postgres_settings(settings, pg_database)
    loader, reader = f"l_{uuid.uuid4().hex[:8]}", f"r_{uuid.uuid4().hex[:8]}"
    admin = _admin(pg_database)
    with admin.cursor() as cur:
        cur.execute(f"create role {loader} login")
        cur.execute(f"create role {reader} login")
    as_loader = _as_user(pg, loader)
    status, detail = _statuses(as_loader)["missing schemas"]
    assert status == "FAIL" and detail.startswith("raw_streams, raw_rds, raw_meta, staging")
    assert f"grant create on database {pg_database['dbname']} to {loader}" in detail
    lines: list[str] = []
    assert check.main(as_loader, say=lines.append) == 1
    assert all(line.split()[0] in ("ok", "warn", "FAIL") for line in lines[:-1])

    with admin.cursor() as cur:  # the README's statements for the loader/dbt user
        for schema in check.WRITTEN_SCHEMAS:
            cur.execute(f"create schema {schema} authorization {loader}")
        cur.execute(f"grant temp on database {pg_database['dbname']} to {loader}")
    assert not [n for n, (status, _) in _statuses(as_loader).items() if status == "FAIL"]
    landing = pipeline.landing_store(as_loader)
    path = settings.workdir / "a.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("user_id,track_id,listen_time\n1,t,2026-01-05 09:00:00\n")
    landing.put("streams/a.csv", path)
    (obj,) = landing.list("streams/")
    with pipeline.warehouse(as_loader) as wh:  # creates its tables in its own schemas
        (outcome,) = wh.load_stream_files(landing, [obj], load_id="r", loaded_at=pipeline.utcnow())
    assert (outcome.status, outcome.rows) == ("loaded", 1)
    found = _statuses(as_loader)
    assert found["raw_meta.load_ledger"] == ("ok", "SELECT, INSERT, UPDATE")

    found = _statuses(_as_user(pg, reader))
    assert found["schema raw_meta"] == (
        "FAIL",
        f"{reader} lacks USAGE and CREATE: grant usage, create on schema raw_meta to {reader}",
    )
    assert check.main(_as_user(pg, reader), say=lambda line: None) == 1
    admin.close()


def test_the_cli_prints_one_line_per_check_and_exits_1_on_a_failure(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MUSIC_ELT_TARGET", "postgres")
    monkeypatch.setenv("WAREHOUSE_HOST", "127.0.0.1")
    monkeypatch.setenv("WAREHOUSE_PORT", "1")  # nothing listens there
    monkeypatch.setenv("WAREHOUSE_USER", "loader")
    monkeypatch.setenv("WAREHOUSE_DBNAME", "music")
    monkeypatch.setenv("WAREHOUSE_PASSWORD", "not-a-secret")
    assert cli.main(["check", "--workdir", str(settings.workdir)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("FAIL  connection: cannot reach the postgres warehouse")
    assert "not-a-secret" not in out
