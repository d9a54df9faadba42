"""Green means green, on DuckDB and on PostgreSQL: readers see only the marts of a build whose
every test passed; a failed build leaves them exactly as the last green build left them; a
publish that did not happen is made by the next plain run; one run at a time per warehouse,
whoever starts it; RDS extracts do not pile up.

One work directory per warehouse goes through the runs in order (each depends on the state the
previous one left). Runs are in-process (``pipeline.run``), the lock holder a real second
process (``python -m loaders.runlock``).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from loaders import pipeline, rds
from loaders.cli import main as cli
from loaders.config import Settings
from loaders.dbt import DbtFailed
from loaders.demo.generate import generate
from loaders.demo.seed import seed, seed_table
from loaders.errors import RunLocked
from loaders.landing import STREAMS_PREFIX
from loaders.serving import serving_path
from loaders.warehouse import open_warehouse
from tests.checks import published
from tests.conftest import postgres_settings
from tests.kpi_reference import MARTS, assert_rows_match, compute_kpis

pytestmark = pytest.mark.slow
HELD_BACK = 2


def _published(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    return {
        mart: sorted(
            published(settings, f"select {', '.join(spec.columns)} from marts.{mart}"), key=repr
        )
        for mart, spec in MARTS.items()
    }


def _assert_published_reference(settings: Settings, data: Path, files: list[Path]) -> None:
    expected = compute_kpis(data / "users.csv", data / "songs.csv", files, datetime.now())
    for mart, spec in MARTS.items():
        rows = published(settings, f"select {', '.join(spec.columns)} from marts.{mart}")
        assert_rows_match(expected.rows(mart), rows, key=spec.key, columns=spec.columns, label=mart)


def _extract_folders(settings: Settings) -> dict[str, set[str]]:
    folders: dict[str, set[str]] = {}
    for obj in pipeline.landing_store(settings).list("rds/"):
        table, run = obj.key.split("/")[1:3]
        folders.setdefault(table, set()).add(run)
    return folders


def _run(settings: Settings) -> list[str]:
    lines: list[str] = []
    pipeline.run(settings, progress=lines.append)
    return lines


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_readers_see_only_green_builds_and_one_run_at_a_time(
    kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith(("MUSIC_ELT_", "WAREHOUSE_")):
            monkeypatch.delenv(name)
    data, work = tmp_path / "data", tmp_path / "work"
    generate(data, streams=3000, days=2, seed=31, users=300, songs=200)
    files = sorted((data / "streams").iterdir())
    first, held = files[:-HELD_BACK], files[-HELD_BACK:]
    seed_dir = tmp_path / "seed"
    (seed_dir / "streams").mkdir(parents=True)
    for name in ("users.csv", "songs.csv"):
        shutil.copy(data / name, seed_dir / name)
    for path in first:
        shutil.copy(path, seed_dir / "streams" / path.name)
    settings = Settings.from_env({}, workdir=work)
    lock_env = {"MUSIC_ELT_WORKDIR": str(work)}
    if kind == "postgres":
        db = request.getfixturevalue("pg_database")
        settings = postgres_settings(settings, db)
        lock_env |= {
            "MUSIC_ELT_TARGET": "postgres",
            "WAREHOUSE_HOST": str(db["host"]),
            "WAREHOUSE_PORT": str(db["port"]),
            "WAREHOUSE_USER": db["user"],
            "WAREHOUSE_DBNAME": db["dbname"],
        }
    settings = settings.model_copy(update={"lock_wait_seconds": 1, "keep_rds_extracts": 1})
    seed(settings, seed_dir, progress=lambda _line: None)
    landing = pipeline.landing_store(settings)

    # 1. a green run publishes
    _run(settings)
    _assert_published_reference(settings, data, first)
    green = _published(settings)

    # 2. a failing error-severity test (a duplicate user) fails the build: readers see exactly
    #    what the green build published, the new files stay in landing, nothing is pending
    for path in held:
        landing.put(STREAMS_PREFIX + path.name, path)
    with rds.connect(settings) as conn, conn.cursor() as cur:
        cur.execute("insert into users select * from users order by user_id limit 1")
        conn.commit()
    with pytest.raises(DbtFailed):
        _run(settings)
    assert _published(settings) == green
    assert sorted(o.key for o in landing.list(STREAMS_PREFIX)) == [
        STREAMS_PREFIX + p.name for p in held
    ]
    with open_warehouse(settings) as wh:
        (unpublished,) = wh.query(
            "select count(*) from raw_meta.dbt_builds where published_at is null"
        )[0]
    assert unpublished == 0

    # 3. another process holds the run lock: a run waits its bounded time, then stops before
    #    it extracts anything, naming the holder
    holder = subprocess.Popen(
        [sys.executable, "-m", "loaders.runlock"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("MUSIC_ELT_")}, **lock_env},
    )
    try:
        assert holder.stdout is not None and "holding" in holder.stdout.readline()
        folders = _extract_folders(settings)
        with pytest.raises(RunLocked) as locked:
            _run(settings)
        message = str(locked.value)
        assert "\n" not in message and "another run holds the run lock" in message
        assert str(holder.pid) in message, message
        assert _extract_folders(settings) == folders  # nothing extracted
    finally:
        holder.communicate("\n", timeout=60)

    # 4. after the fix the next run builds, archives and publishes everything
    with rds.connect(settings) as conn:
        seed_table(conn, "users", data / "users.csv")
    _run(settings)
    _assert_published_reference(settings, data, first + held)
    assert landing.list(STREAMS_PREFIX) == []
    # RDS extracts: only the newest one per table is kept (MUSIC_ELT_KEEP_RDS_EXTRACTS=1) ...
    folders = _extract_folders(settings)
    assert {table: len(runs) for table, runs in folders.items()} == {"users": 1, "songs": 1}

    # 5. ... and a run with nothing new leaves nothing behind
    lines = _run(settings)
    assert any("nothing new" in line for line in lines), lines
    assert _extract_folders(settings) == folders

    # 6. a publish that died (the build is recorded, readers do not have it): the next plain
    #    run, with nothing new, publishes it; a full disk is one line and exit 2
    with open_warehouse(settings) as wh, wh.transaction() as cur:
        cur.execute("update raw_meta.dbt_builds set published_at = null")
        if kind == "duckdb":
            serving_path(settings).unlink()
        else:
            cur.execute("delete from marts.fct_genre_kpis_daily")
    if kind == "duckdb":
        real_replace = os.replace

        def full_disk(src: Any, dst: Any) -> None:  # the disk fills up as the publish ends
            if str(dst).endswith("serving.duckdb"):
                raise OSError(errno.ENOSPC, "No space left on device")
            real_replace(src, dst)

        capsys.readouterr()
        with mock.patch("loaders.serving.os.replace", side_effect=full_disk):
            assert cli(["run", "--workdir", str(work)]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and "publishing the marts failed" in err[0], err
        assert "No space left on device" in err[0] and "Traceback" not in err[0]
    lines = _run(settings)
    assert any("a green build is not published yet" in line for line in lines), lines
    _assert_published_reference(settings, data, first + held)
