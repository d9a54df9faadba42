"""The ledger's vocabulary has one home on each side of the build: the loaders write the raw
tables and the ledger under the names dbt's sources give them (the models name raw tables only
through those sources: macros raw_table_name, source())."""

from __future__ import annotations

import re

import yaml

from loaders.warehouse import ledger
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
    assert sources["streams"]["streams"] == ledger.STREAMS_TABLE
    assert sources["meta"]["load_ledger"] == ledger.LEDGER_TABLE
    assert sources["meta"]["dbt_builds"] == ledger.BUILDS_TABLE
    assert sources["meta"]["last_green_build"] == ledger.LAST_GREEN_BUILD
    assert sources["meta"]["unbuilt_loads"] == ledger.UNBUILT_LOADS
    assert {ledger.snapshot_table(name) for name in sources["rds"]} == set(sources["rds"].values())
    assert ledger.snapshot_table("songs").startswith(f"{ledger.RDS_SCHEMA}.")
    schemas = {table.split(".")[0] for tables in sources.values() for table in tables.values()}
    assert schemas == set(ledger.RAW_SCHEMAS)


def test_no_model_spells_a_raw_table_name() -> None:
    """Models and dbt tests reach a raw table through its source, never by a literal."""
    literal = re.compile(r"'(" + "|".join(ledger.RAW_SCHEMAS) + r")\.\w+'")
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
    assert f"({ledger.CURRENT_VERSION}) as is_current" in staged
    assert "superseded_seq is null" in ledger.CURRENT_VERSION
