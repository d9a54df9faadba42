"""`make docs` regenerates the dbt docs only when they are stale (loaders.docs_site)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from loaders.config import Settings
from loaders.docs_site import docs_freshness, last_build_finished, main

GENERATED = datetime(2026, 3, 1, 12, 0, 0)


def _stamp(path: Path, moment: datetime) -> None:
    seconds = moment.replace(tzinfo=UTC).timestamp()
    os.utime(path, (seconds, seconds))


@pytest.fixture
def site(tmp_path: Path) -> Settings:
    """A dbt project with files older than a docs site generated at GENERATED."""
    project = tmp_path / "project"
    (project / "models" / "marts").mkdir(parents=True)
    for name in ("dbt_project.yml", "profiles.yml", "models/marts/fct_x.sql"):
        (project / name).write_text("-- x\n")
        _stamp(project / name, GENERATED - timedelta(hours=1))
    settings = Settings.from_env(
        {"MUSIC_ELT_DBT_PROJECT_DIR": str(project)}, workdir=tmp_path / "work"
    )
    target = settings.dbt_target_path
    target.mkdir(parents=True)
    (target / "index.html").write_text("<html></html>")
    (target / "manifest.json").write_text("{}")
    stamp = GENERATED.isoformat() + ".123456Z"
    (target / "catalog.json").write_text(json.dumps({"metadata": {"generated_at": stamp}}))
    return settings


def test_current_artifacts_are_served_as_they_are(site: Settings) -> None:
    fresh = docs_freshness(site, last_build=GENERATED - timedelta(minutes=1))
    assert fresh.current, fresh.reason


def test_a_changed_project_file_makes_them_stale(site: Settings) -> None:
    model = site.dbt_project_dir / "models" / "marts" / "fct_x.sql"
    _stamp(model, GENERATED + timedelta(seconds=2))
    fresh = docs_freshness(site, last_build=GENERATED - timedelta(minutes=1))
    assert not fresh.current and "fct_x.sql" in fresh.reason


def test_a_later_green_build_makes_them_stale(site: Settings) -> None:
    fresh = docs_freshness(site, last_build=GENERATED + timedelta(minutes=1))
    assert not fresh.current and "build" in fresh.reason


def test_missing_or_broken_artifacts_are_stale(site: Settings) -> None:
    (site.dbt_target_path / "catalog.json").write_text("{not json")
    assert not docs_freshness(site, last_build=None).current
    (site.dbt_target_path / "catalog.json").unlink()
    fresh = docs_freshness(site, last_build=None)
    assert not fresh.current and "catalog.json" in fresh.reason


def test_last_build_comes_from_the_serving_copy_or_the_warehouse(
    kpi_workdir: Path, tmp_path: Path
) -> None:
    conn = duckdb.connect(str(kpi_workdir / "warehouse.duckdb"), read_only=True)
    (finished,) = conn.execute("select max(finished_at) from raw_meta.dbt_builds").fetchone()
    conn.close()
    assert last_build_finished(Settings.from_env({}, workdir=kpi_workdir)) == finished
    # nothing published yet: read from the warehouse itself
    work = tmp_path / "unpublished"
    work.mkdir()
    shutil.copy(kpi_workdir / "warehouse.duckdb", work / "warehouse.duckdb")
    assert last_build_finished(Settings.from_env({}, workdir=work)) == finished
    assert last_build_finished(Settings.from_env({}, workdir=tmp_path / "none")) is None


def test_command_exit_code_says_whether_to_regenerate(
    site: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MUSIC_ELT_DBT_PROJECT_DIR", str(site.dbt_project_dir))
    monkeypatch.delenv("MUSIC_ELT_TARGET", raising=False)
    assert main(["--workdir", str(site.workdir)]) == 0  # no build log: current
    assert "current" in capsys.readouterr().out
    (site.dbt_target_path / "index.html").unlink()
    assert main(["--workdir", str(site.workdir)]) == 1
    assert "regenerating" in capsys.readouterr().out


def test_docs_of_the_demo_are_served_without_regenerating(kpi_workdir: Path) -> None:
    """What `make docs` runs first, in its own process as make does: after the demo (build,
    then docs generate) the artifacts are current."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSIC_ELT_", "WAREHOUSE_"))}
    done = subprocess.run(
        [sys.executable, "-m", "loaders.docs_site", "--workdir", str(kpi_workdir)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "are current" in done.stdout
