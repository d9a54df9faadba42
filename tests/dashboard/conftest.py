"""A small built warehouse for the dashboard tests, built once per test session.

Generated data (3 days, ~8k plays, every kind of bad row, plus one file the loader refuses
whole) goes through ``music-elt demo --from-dir`` (seed, run, ``dbt docs generate``) exactly as
the README's ``make demo`` does, then the serving copy is published as the pipeline's finish
step does. A second run loads a late file for an hour of the first day, so the revision log
and the pipeline's run history have something to show; then the docs site is generated
again, as the demo leaves it after its build. The CLI runs in a subprocess:
dbt-duckdb keeps its DuckDB instance open until its process ends, and the tests must be free to
open the warehouse read-only. Under pytest-xdist the workers share one build (a file lock in
the session's common temporary folder).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from filelock import FileLock

from loaders.config import Settings
from loaders.demo.generate import generate

# A file whose header lacks listen_time: quarantined by the loader with its reason.
REFUSED_FILE = "streams/zz_refused_no_listen_time.csv"
# A file delivered after the first run, with plays in an hour already published.
LATE_FILE = "streams/late/zz_late_plays.csv"


def build_kpi_workdir(root: Path) -> Path:
    """Generate, seed, run and publish into ``root/work``; return the work directory."""
    source, work = root / "source", root / "work"
    generate(source, streams=8_000, days=3, seed=23, users=600, songs=400)
    refused = source / REFUSED_FILE
    refused.write_text("user_id,track_id,played\n1,abc,2026-01-06 10:00:00\n")
    # `music-elt demo --from-dir`: seed, run, dbt docs generate (the README's `make demo`)
    demo = [sys.executable, "-m", "loaders.cli", "demo", "--from-dir", str(source)]
    subprocess.run(
        [*demo, "--workdir", str(work)],
        check=True,
        stdout=subprocess.DEVNULL,
        env=_clean_env(),
    )
    assert (work / "serving.duckdb").is_file()  # the run published its green build

    # a late file for the first day's 03:00 hour, delivered after that day was published
    first_day = min(path.name.split("_")[1] for path in (source / "streams").glob("listens_*"))
    with (source / "songs.csv").open(newline="") as songs:
        tracks = [row["track_id"] for row in csv.DictReader(songs)][:3]
    late = root / "late.csv"
    late.write_text(
        "user_id,track_id,listen_time\n"
        + "".join(f"{n},{tracks[n % 3]},{first_day} 03:{n:02d}:00\n" for n in range(1, 25))
    )
    landing = work / "landing" / LATE_FILE
    landing.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(late, landing)
    run = [sys.executable, "-m", "loaders.cli", "run", "--workdir", str(work)]
    subprocess.run(run, check=True, stdout=subprocess.DEVNULL, env=_clean_env())
    # the docs site of the last green build, as the demo leaves it (`dbt docs generate`)
    docs = (
        "import sys; from pathlib import Path; from loaders.config import Settings; "
        "from loaders.dbt import run_dbt; "
        "run_dbt(Settings.from_env(workdir=Path(sys.argv[1])), ['docs', 'generate'])"
    )
    subprocess.run(
        [sys.executable, "-c", docs, str(work)],
        check=True,
        stdout=subprocess.DEVNULL,
        env=_clean_env(),
    )
    return work


def _clean_env() -> dict[str, str]:
    """This environment without settings that would point the CLI elsewhere."""
    import os

    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MUSIC_ELT_", "WAREHOUSE_"))
    }


@pytest.fixture(scope="session")
def kpi_workdir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The work directory of a built and published warehouse (treat it as read-only)."""
    if worker_id == "master":
        return build_kpi_workdir(tmp_path_factory.mktemp("dashboard-kpis"))
    shared = tmp_path_factory.getbasetemp().parent / "dashboard-kpis"
    with FileLock(str(shared) + ".lock"):
        done = shared / "built.json"
        if not done.is_file():
            if shared.exists():
                shutil.rmtree(shared)  # an earlier worker failed half-way
            shared.mkdir()
            work = build_kpi_workdir(shared)
            done.write_text(json.dumps({"work": str(work)}))
        return Path(json.loads(done.read_text())["work"])


@pytest.fixture(scope="session")
def kpi_settings(kpi_workdir: Path) -> Settings:
    return Settings.from_env({}, workdir=kpi_workdir)


@pytest.fixture
def marts(kpi_settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse itself, read-only (not the serving copy): the truth the dashboard's numbers
    are compared with. Its relations keep their names, except that the KPI marts dbt built in
    ``kpi_build`` are named as readers know them, ``marts.<name>``."""
    conn = duckdb.connect()
    path = str(kpi_settings.warehouse.duckdb_path).replace("'", "''")
    conn.execute(f"attach '{path}' as warehouse (read_only)")
    tables = conn.execute(
        "select table_schema, table_name from information_schema.tables "
        "where table_catalog = 'warehouse'"
    ).fetchall()
    for schema, table in tables:
        shown = "marts" if schema == "kpi_build" else schema
        conn.execute(f"create schema if not exists memory.{shown}")
        conn.execute(
            f"create view memory.{shown}.{table} as select * from warehouse.{schema}.{table}"
        )
    yield conn
    conn.close()


@pytest.fixture
def dashboard_env(kpi_workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment `make dashboard` gives the app: the work directory, DuckDB target."""
    for name in ("MUSIC_ELT_TARGET", "MUSIC_ELT_DUCKDB_PATH", "WAREHOUSE_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MUSIC_ELT_WORKDIR", str(kpi_workdir))
    return kpi_workdir
