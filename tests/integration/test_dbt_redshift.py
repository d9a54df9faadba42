"""The dbt project for Redshift, without a cluster (none is reachable here): it parses, compiles
offline, and every compiled model parses as Redshift SQL. This is a syntax check, not a run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlglot

from tests.conftest import REPO

DBT = Path(sys.executable).parent / "dbt"


def dbt(*args: str, target_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MUSIC_ELT_TARGET": "redshift",
        "WAREHOUSE_HOST": "redshift.invalid",
        "WAREHOUSE_USER": "nobody",
        "WAREHOUSE_PASSWORD": "not-a-secret",
        "WAREHOUSE_DBNAME": "dev",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
    }
    return subprocess.run(
        [
            str(DBT),
            *args,
            "--project-dir",
            str(REPO / "dbt_project"),
            "--profiles-dir",
            str(REPO / "dbt_project"),
            "--target",
            "redshift",
            "--target-path",
            str(target_path),
            "--log-path",
            str(target_path / "logs"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_redshift_target_compiles_offline_to_valid_sql(tmp_path: Path) -> None:
    parsed = dbt("parse", target_path=tmp_path)
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr
    compiled = dbt(
        "compile",
        "--vars",
        "{music_elt_offline_compile: true}",
        "--no-populate-cache",
        "--exclude",
        "test_type:unit",
        target_path=tmp_path,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    models = sorted((tmp_path / "compiled" / "music_elt" / "models").rglob("*.sql"))
    assert {p.stem for p in models} >= {
        "fct_genre_kpis_daily",
        "fct_listening_kpis_hourly",
        "fct_top_artists_hourly",
        "stg_streams__listens",
    }
    for path in models:
        sql = path.read_text()
        assert "collate c" not in sql.lower(), f"{path.name}: DuckDB collation in Redshift SQL"
        sqlglot.parse(sql, read="redshift")  # raises on a syntax error
    # the secret given to the profile is not written into dbt's artifacts
    for artifact in tmp_path.rglob("*"):
        if artifact.is_file() and artifact.suffix in (".json", ".sql", ".log", ".msgpack"):
            assert b"not-a-secret" not in artifact.read_bytes(), artifact
