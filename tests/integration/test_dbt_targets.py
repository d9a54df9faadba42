"""dbt's dev/prod schema convention, read from the manifest of `dbt parse` for each target (no
warehouse needed): production and DuckDB targets build the shared schemas as named, the dev
targets build into `<target schema>_<name>`, and every target reads the same raw sources. The
KPI marts build into `kpi_build`: readers get them from the publish step, as `marts.<name>`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

PROJECT = REPO / "dbt_project"
LAYERS = {"stg_rds__users": "staging", "int_artist_credits_split": "intermediate"}
LAYERS |= {"fct_listens": "marts", "dim_users": "marts", "fct_genre_kpis_daily": "kpi_build"}
RAW = {"raw_rds", "raw_streams", "raw_meta"}


def _parse(target: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from dbt.cli.main import dbtRunner

    monkeypatch.setenv("WAREHOUSE_SCHEMA", "analytics")
    monkeypatch.setenv("WAREHOUSE_DEV_SCHEMA", "dbt_alice")
    monkeypatch.setenv("MUSIC_ELT_DUCKDB_PATH", str(tmp_path / "unused.duckdb"))
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "False")
    out = tmp_path / (target or "default")
    args = ["parse", "--quiet", "--no-partial-parse", "--project-dir", str(PROJECT)]
    args += ["--profiles-dir", str(PROJECT), "--target-path", str(out), "--log-path", str(out)]
    result = dbtRunner().invoke([*args, *(["--target", target] if target else [])])
    assert result.success, result.exception
    return result.result


def _schemas(manifest: Any) -> dict[str, str]:
    return {
        node.name: node.schema
        for node in manifest.nodes.values()
        if node.resource_type == "model" and node.name in LAYERS
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "prefix"),
    [
        ("postgres", ""),
        ("redshift", ""),
        ("duckdb", ""),
        ("postgres_dev", "dbt_alice_"),
        ("redshift_dev", "dbt_alice_"),
    ],
)
def test_targets_build_prod_or_dev_schemas_and_read_shared_sources(
    target: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _parse(target, tmp_path, monkeypatch)
    assert _schemas(manifest) == {model: prefix + layer for model, layer in LAYERS.items()}
    fct = manifest.nodes["model.music_elt.fct_listens"]
    assert fct.relation_name.endswith(f'."{prefix}marts"."fct_listens"'), fct.relation_name
    assert {source.schema for source in manifest.sources.values()} == RAW


@pytest.mark.slow
def test_dbt_by_hand_builds_dev_schemas_unless_production_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --target the profile picks DuckDB, or the dev target of the warehouse that
    MUSIC_ELT_TARGET names: a hand-run `dbt build` never writes the production schemas."""
    monkeypatch.setenv("MUSIC_ELT_TARGET", "postgres")
    assert _schemas(_parse(None, tmp_path, monkeypatch))["fct_listens"] == "dbt_alice_marts"


@pytest.mark.slow
def test_every_warn_test_has_an_explanation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console explains each warn-severity test of the project in one line, from the
    test's `meta: {explanation: ...}` (loaders.dbt): a warn test added without one fails here,
    and each says what its rows mean and where to look, on one short line."""
    from loaders.dbt import explanation, warning_line

    manifest = _parse("duckdb", tmp_path, monkeypatch)
    warn_tests = {
        node.name: explanation(node)
        for node in manifest.nodes.values()
        if node.resource_type == "test" and str(node.config.severity).lower() == "warn"
    }
    assert len(warn_tests) == 5, sorted(warn_tests)
    assert all(warn_tests.values()), [name for name, text in warn_tests.items() if not text]
    for name, text in warn_tests.items():
        rendered = warning_line(name, 1234, explained=text)
        assert "1,234" in rendered and "see " in rendered and "\n" not in rendered, name
        assert len(rendered) <= 100, text
    (users,) = [text for name, text in warn_tests.items() if "ref_dim_users" in name]
    line = warning_line("relationships_fct_listens_user_id", 313, explained=users)
    assert line.startswith("313 plays by users not in RDS: kept")
    assert "dim_users" in line


def test_the_example_profile_has_the_live_profiles_targets() -> None:
    live = yaml.safe_load((PROJECT / "profiles.yml").read_text())["music_elt"]
    example_path = REPO / "profiles.yml.example"
    assert not example_path.is_symlink()
    example = yaml.safe_load(example_path.read_text())["music_elt"]
    assert example["outputs"] == live["outputs"]
    assert set(live["outputs"]) == {
        "duckdb",
        "postgres",
        "postgres_dev",
        "redshift",
        "redshift_dev",
    }
    assert example["target"] == "postgres_dev"  # a developer's copy defaults to their schemas
