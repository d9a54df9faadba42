"""The dbt project for Redshift, without a cluster (none is reachable here): it parses, compiles
offline both as a first build and as an incremental run, every compiled model parses as Redshift
SQL, and none uses a construct Redshift does not run. This checks SQL text, not a run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlglot

from tests.conftest import REPO

DBT = Path(sys.executable).parent / "dbt"

# SQL that DuckDB or PostgreSQL run and Redshift does not (Redshift SQL reference: "Unsupported
# PostgreSQL features" and "Unsupported PostgreSQL functions"), or that Redshift documents only
# in another form. sqlglot's redshift parser accepts most of these, so they are looked for in
# the compiled text. Not listed because Redshift runs them today: TRY_CAST ("TRY_CAST
# function"; guarded_cast dispatches to it on Redshift) and QUALIFY ("QUALIFY clause"). The
# models still avoid both, since PostgreSQL has neither: the PostgreSQL tests build every model.
NOT_ON_REDSHIFT = {
    r"\bregexp_full_match\s*\(": "DuckDB regex function (use ~)",
    r"\bregexp_matches\s*\(": "DuckDB/PostgreSQL regex function",
    r"\bgenerate_series\s*\(": "a leader-node-only function on Redshift",
    r"\bunnest\s*\(": "arrays are not supported",
    r"\barray_agg\s*\(": "arrays are not supported (use listagg)",
    r"\bstring_agg\s*\(": "not supported (use listagg)",
    r"\bstring_split\s*\(|\bstr_split\s*\(": "DuckDB list function",
    r"\btry_strptime\s*\(|\bstrptime\s*\(": "DuckDB timestamp parsing",
    r"\bcollate\s+\"?c\"?\b": "PostgreSQL/DuckDB collation (Redshift: collate(x, 'cs'))",
    r"\bgroup\s+by\s+all\b": "GROUP BY ALL is DuckDB syntax",
    r"\bdistinct\s+on\s*\(": "DISTINCT ON is PostgreSQL syntax",
    r"\bfilter\s*\(\s*where\b": "aggregate FILTER clauses are not supported",
    r"\bselect\s+\*\s+exclude\b": "SELECT * EXCLUDE is DuckDB syntax",
    r"\blist_\w+\s*\(": "DuckDB list function",
    r"\bepoch_ms\s*\(": "DuckDB function",
    r"::\s*(?:hugeint|ubigint|uinteger|utinyint|varint)\b": "DuckDB-only type",
    r"\btimestamptz\s*'": "use timestamp with time zone literals",
    # "TRIM function" shows BOTH/LEADING/TRAILING with literal characters only
    r"\btrim\s*\(\s*(?:both|leading|trailing)\s+(?!'[^']*'\s+from\b)": (
        "TRIM characters given by an expression (Redshift documents a literal)"
    ),
}


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
            *("--project-dir", str(REPO / "dbt_project")),
            *("--profiles-dir", str(REPO / "dbt_project")),
            *("--target", "redshift"),
            *("--target-path", str(target_path)),
            *("--log-path", str(target_path / "logs")),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def assert_physical_design(manifest: dict[str, Any]) -> None:
    """The Redshift configs of the project, as dbt parsed them for the redshift target."""
    models = {
        node["name"]: node["config"]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model"
    }
    views = [name for name, config in models.items() if config["materialized"] == "view"]
    assert views and all(models[name]["bind"] is False for name in views)  # late-binding
    assert models["int_artist_credits_split"]["materialized"] == "table"
    assert models["int_artist_credits_split"]["dist"] == "all"
    assert models["fct_listens"]["incremental_strategy"] == "delete_insert_from_first_date"
    assert models["fct_listens"]["sort"] == ["listen_date", "listen_hour"]
    kpis = ("fct_genre_kpis_daily", "fct_listening_kpis_hourly", "fct_top_artists_hourly")
    assert all(models[name]["incremental_strategy"] == "append" for name in kpis)


def constructs_redshift_lacks(sql: str) -> list[str]:
    """What in ``sql`` (comments removed) Redshift would not run, with the reason."""
    code = re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.DOTALL).lower()
    return [
        f"{match.group(0).strip()!r}: {reason}"
        for pattern, reason in NOT_ON_REDSHIFT.items()
        for match in [re.search(pattern, code)]
        if match
    ]


def test_the_checker_finds_what_redshift_lacks() -> None:
    assert constructs_redshift_lacks("select a collate c from t group by all") != []
    assert constructs_redshift_lacks("select listagg(a, ',') from t -- string_agg(x)") == []
    # Redshift has TRY_CAST and QUALIFY now
    assert constructs_redshift_lacks("select try_cast(x as int) from t qualify 1 = 1") == []
    assert constructs_redshift_lacks("select trim(both ' ' || chr(9) from x)") == [
        "'trim(both': TRIM characters given by an expression (Redshift documents a literal)"
    ]
    assert constructs_redshift_lacks("select trim(both ' \t\n' from x), trim(x)") == []


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "incremental"])
def test_redshift_target_compiles_offline_to_sql_redshift_runs(tmp_path: Path, mode: str) -> None:
    parsed = dbt("parse", target_path=tmp_path)
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr
    assert_physical_design(json.loads((tmp_path / "manifest.json").read_text()))
    compiled = dbt(
        "compile",
        *("--vars", f"{{music_elt_offline_compile: {mode}}}"),
        "--no-populate-cache",
        *("--exclude", "test_type:unit"),
        target_path=tmp_path,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    compiled_dir = tmp_path / "compiled" / "music_elt"
    models = sorted((compiled_dir / "models").rglob("*.sql"))
    assert {p.stem for p in models} >= {
        "fct_genre_kpis_daily",
        "fct_listening_kpis_hourly",
        "fct_top_artists_hourly",
        "fct_listens",
        "stg_streams__listens",
    }
    marts = {p.stem: p.read_text() for p in models if p.parent.name == "marts"}
    stale = {p.stem: p.read_text() for p in models if p.stem.startswith("int_listen_")}
    if mode == "incremental":  # the branches that only run on an existing table
        assert '"int_listen_dates_stale" as stale' in marts["fct_genre_kpis_daily"]
        assert '"int_listen_hours_stale" as stale' in marts["fct_top_artists_hourly"]
        assert "full outer join" in stale["int_listen_hours_stale"]
    else:
        assert '"int_listen_dates_stale" as stale' not in marts["fct_genre_kpis_daily"]
        assert "full outer join" not in stale["int_listen_dates_stale"]
    problems = {}
    for path in sorted(compiled_dir.rglob("*.sql")):  # models and data tests
        sql = path.read_text()
        sqlglot.parse(sql, read="redshift")  # raises on a syntax error
        if found := constructs_redshift_lacks(sql):
            problems[path.name] = found
    assert problems == {}
    # the secret given to the profile is not written into dbt's artifacts
    for artifact in tmp_path.rglob("*"):
        if artifact.is_file() and artifact.suffix in (".json", ".sql", ".log", ".msgpack"):
            assert b"not-a-secret" not in artifact.read_bytes(), artifact
