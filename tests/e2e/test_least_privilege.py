"""A whole run as the loader/dbt user the README's "Privileges" creates on PostgreSQL: it owns
its schemas and may create temporary tables, nothing more (no CREATE on the database, not a
superuser). Extract, load, dbt build and publish succeed, and the published marts equal the
independent reference."""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from loaders import check, pipeline
from loaders.config import Settings
from loaders.demo.generate import generate
from loaders.demo.seed import seed
from tests.checks import published
from tests.conftest import pg_dsn, postgres_settings
from tests.kpi_reference import MARTS, assert_rows_match, compute_kpis

pytestmark = pytest.mark.slow


def test_a_run_as_the_documented_loader_user(
    tmp_path: Path, pg_database: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("MUSIC_ELT_", "WAREHOUSE_")):
            monkeypatch.delenv(name)
    data = tmp_path / "data"
    generate(data, streams=1500, days=2, seed=11, users=150, songs=120)
    loader = f"l_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(pg_dsn(pg_database))
    admin.autocommit = True
    with admin.cursor() as cur:  # the README's statements
        cur.execute(f"create role {loader} login")
        for schema in check.WRITTEN_SCHEMAS:
            cur.execute(f"create schema {schema} authorization {loader}")
        cur.execute(f"grant temp on database {pg_database['dbname']} to {loader}")
        cur.execute(f"revoke create on database {pg_database['dbname']} from public")
    admin.close()
    base = postgres_settings(Settings.from_env({}, workdir=tmp_path / "work"), pg_database)
    settings = base.model_copy(
        update={"warehouse": base.warehouse.model_copy(update={"user": loader})}
    )
    seed(settings, data, progress=lambda _line: None)
    pipeline.run(settings, progress=lambda _line: None)
    files = sorted((data / "streams").iterdir())
    expected = compute_kpis(data / "users.csv", data / "songs.csv", files, datetime.now())
    for mart, spec in MARTS.items():
        rows = published(settings, f"select {', '.join(spec.columns)} from marts.{mart}")
        assert_rows_match(expected.rows(mart), rows, key=spec.key, columns=spec.columns, label=mart)
