"""What production installs and imports: the core package without servers, test or lint tools,
and a production run that never loads the demo package."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from loaders.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
LOCKS = REPO / "requirements"
# Distributions that must never reach a production image (core or Airflow).
NOT_IN_PRODUCTION = {
    "pgserver",
    "pytest",
    "pytest-xdist",
    "moto",
    "ruff",
    "mypy",
    "sqlfluff",
    "sqlfluff-templater-dbt",
    "boto3-stubs",
    "types-psycopg2",
}


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _pins(lock: str) -> dict[str, str]:
    pins = {}
    for line in (LOCKS / f"{lock}.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, version = line.split("#")[0].strip().split("==")
            pins[_name(name)] = version
    return pins


def test_core_dependencies_are_what_production_runs() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    assert {"dbt-core", "dbt-postgres", "dbt-redshift", "boto3", "psycopg2-binary"} <= core
    assert {"pydantic-settings", "tenacity"} <= core
    assert not core & NOT_IN_PRODUCTION
    extras = project["optional-dependencies"]
    assert {_name(r) for r in extras["embedded"]} == {"pgserver"}
    assert not {_name(r) for r in extras["airflow"]} & NOT_IN_PRODUCTION


def test_profile_locks_are_subsets_of_the_tested_lock() -> None:
    dev = _pins("dev")
    assert dev.keys() >= NOT_IN_PRODUCTION
    for profile in ("core", "airflow", "embedded"):
        pins = _pins(profile)
        assert pins, profile
        assert {n: v for n, v in pins.items() if dev.get(n) != v} == {}, profile
    assert not _pins("core").keys() & (NOT_IN_PRODUCTION | {"apache-airflow"})
    assert not _pins("airflow").keys() & NOT_IN_PRODUCTION
    assert {"apache-airflow", "astronomer-cosmos", "apache-airflow-providers-slack"} <= (
        _pins("airflow").keys()
    )
    assert _pins("embedded").keys() - _pins("core").keys() >= {"pgserver"}


def test_a_production_run_imports_neither_the_demo_package_nor_pgserver() -> None:
    probe = (
        "import sys, loaders.pipeline, loaders.cli, loaders.connections\n"
        "print(' '.join(sorted(m for m in sys.modules if m.count('.') < 2)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    loaded = set(done.stdout.split())
    assert "loaders" in loaded
    assert not loaded & {"loaders.demo", "pgserver", "airflow", "pytest", "moto"}


def test_the_embedded_stack_without_its_extra_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from loaders.cli import main
    from loaders.demo.embedded import embedded_server

    monkeypatch.setitem(sys.modules, "pgserver", None)  # import pgserver raises ImportError
    with pytest.raises(ConfigError, match=r"music-elt\[embedded\]"):
        embedded_server(tmp_path / "pgdata")
    for name in ("MUSIC_ELT_RDS_DSN", "MUSIC_ELT_WORKDIR"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "work" / "rds-pgdata").mkdir(parents=True)  # seeded once, with the extra
    assert main(["run", "--workdir", str(tmp_path / "work")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "'embedded' extra" in error
