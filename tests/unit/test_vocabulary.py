"""The ledger's vocabulary has one home on each side of the build: the loaders write the raw
tables and the ledger under the names dbt's sources give them (the models name raw tables only
through those sources: macros raw_table_name, source())."""

from __future__ import annotations

import re

import yaml

from loaders.warehouse.ledger import (
    BUILDS_TABLE,
    CURRENT_VERSION,
    LAST_GREEN_BUILD,
    LEDGER_TABLE,
    RAW_SCHEMAS,
    RDS_SCHEMA,
    STREAMS_TABLE,
    UNBUILT_LOADS,
    snapshot_table,
)
from tests.conftest import REPO

PROJECT = REPO / "dbt_project"


def _source_tables() -> dict[str, dict[str, str]]:
    """Each dbt source's tables as ``schema.table``, by source and table name."""
    tables: dict[str, dict[str, str]] = {}
    for path in (PROJECT / "models").rglob("_*__sources.yml"):
        for source in yaml.safe_load(path.read_text())["sources"]:
            named = {t["name"]: f"{source['schema']}.{t['name']}" for t in source["tables"]}
            tables.setdefault(source["name"], {}).update(named)
    return tables


def test_the_loaders_write_the_tables_the_dbt_sources_name() -> None:
    sources = _source_tables()
    assert sources["streams"]["streams"] == STREAMS_TABLE
    assert sources["meta"]["load_ledger"] == LEDGER_TABLE
    assert sources["meta"]["dbt_builds"] == BUILDS_TABLE
    assert sources["meta"]["last_green_build"] == LAST_GREEN_BUILD
    assert sources["meta"]["unbuilt_loads"] == UNBUILT_LOADS
    assert {snapshot_table(name) for name in sources["rds"]} == set(sources["rds"].values())
    assert snapshot_table("songs").startswith(f"{RDS_SCHEMA}.")
    schemas = {table.split(".")[0] for tables in sources.values() for table in tables.values()}
    assert schemas == set(RAW_SCHEMAS)


def test_no_model_spells_a_raw_table_name() -> None:
    """Models and dbt tests reach a raw table through its source, never by a literal."""
    literal = re.compile(r"'(" + "|".join(RAW_SCHEMAS) + r")\.\w+'")
    spelled = [
        str(path.relative_to(PROJECT))
        for folder in ("models", "tests", "macros")
        for path in (PROJECT / folder).rglob("*.sql")
        if literal.search(path.read_text())
    ]
    assert spelled == []


def test_the_loaders_and_the_models_tell_the_current_version_alike() -> None:
    """The loaders' current-version predicate is the one stg_meta__landed_objects.is_current
    computes (on superseded_seq, the column the models compare)."""
    staged = (PROJECT / "models/staging/meta/stg_meta__landed_objects.sql").read_text()
    assert f"({CURRENT_VERSION}) as is_current" in staged
    assert "superseded_seq is null" in CURRENT_VERSION
