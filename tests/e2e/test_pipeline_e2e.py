"""The README's path end to end: generated data -> `music-elt seed` -> `music-elt run`, with the
marts checked against the independent computation of the KPI contract in tests/kpi_reference.py.

These run dbt for real (DuckDB, and PostgreSQL from pgserver for portability)."""

from __future__ import annotations

import csv
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from loaders import manifest, pipeline
from loaders.cli import main as cli
from loaders.config import Settings
from loaders.dbt import _release_duckdb, console_args, dbt_args, dbt_environment, run_dbt
from loaders.demo.generate import generate
from loaders.warehouse import open_warehouse
from tests.checks import published
from tests.conftest import postgres_settings
from tests.kpi_reference import MARTS, KpiResult, assert_rows_match, compute_kpis

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated data set in the source schema: 3 days, anomalies of every kind."""
    out = tmp_path_factory.mktemp("source")
    generate(out, streams=20_000, days=3, seed=11, users=800, songs=600)
    return out


@pytest.fixture(scope="module")
def expected(source: Path) -> KpiResult:
    return reference(source)


def reference(source: Path) -> KpiResult:
    files = sorted(
        p for p in (source / "streams").rglob("*") if p.name.endswith((".csv", ".csv.gz"))
    )
    return compute_kpis(source / "users.csv", source / "songs.csv", files, datetime.now())


def fetch(settings: Settings, mart: str) -> list[dict[str, Any]]:
    columns = MARTS[mart].columns
    rows = published(settings, f"select {', '.join(columns)} from marts.{mart}")
    return [dict(zip(columns, row, strict=True)) for row in rows]


def assert_marts_match(expected: KpiResult, settings: Settings) -> None:
    for mart, spec in MARTS.items():
        assert_rows_match(
            expected.rows(mart),
            fetch(settings, mart),
            key=spec.key,
            columns=spec.columns,
            label=f"marts.{mart}",
        )


def marts_snapshot(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    return {mart: fetch(settings, mart) for mart in MARTS}


def assert_same_marts(a: Settings, b: Settings) -> None:
    for mart, spec in MARTS.items():
        assert_rows_match(
            fetch(a, mart),
            fetch(b, mart),
            key=spec.key,
            columns=spec.columns,
            rel_tol=1e-12,
            label=f"marts.{mart}",
        )


def assert_unit_tests_left_to_ci(settings: Settings, summary: pipeline.RunSummary | None) -> None:
    """A run's build leaves dbt's unit tests out (MUSIC_ELT_DBT_UNIT_TESTS unset), and every
    unit test of the project passes on this warehouse: the suite is their CI."""
    if summary is not None:
        assert summary.dbt is not None and "unit_test" not in summary.dbt.counts, summary.dbt
    parsed = manifest.load_manifest(settings.dbt_manifest_path)
    unit_tests = len(parsed.get("unit_tests", {}))
    assert unit_tests >= 10
    report = run_dbt(settings, ["test", "--select", "test_type:unit"])
    assert report.success, report.failures
    assert dict(report.counts) == {"unit_test": {"pass": unit_tests}}, report.counts


def run_cli(*args: str) -> None:
    assert cli(list(args)) == 0, f"music-elt {' '.join(args)} failed"


def test_seed_and_run_produce_the_contract_kpis(
    source: Path, expected: KpiResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    run_cli("seed", "--from-dir", str(source), "--workdir", str(work))
    capsys.readouterr()
    run_cli("run", "--workdir", str(work))
    settings = Settings.from_env({}, workdir=work)
    assert_marts_match(expected, settings)

    # the summary gives each step's peak RSS (this process: DuckDB and dbt included)
    out = capsys.readouterr().out
    (peaks,) = [line for line in out.splitlines() if "peak RSS" in line]
    assert peaks.startswith("  peak RSS: "), peaks  # each step's own peak (Linux)
    by_step = {step: float(gb) for step, gb in re.findall(r"(\w[\w ]*?) (\d+\.\d\d) GB", peaks)}
    assert list(by_step) == ["extract", "plan", "load", "dbt build", "archive", "publish"], peaks
    assert all(0.02 < gb < 4 for gb in by_step.values()), peaks

    # counts in equal counts out: raw = kept + rejected + duplicates
    with open_warehouse(settings) as wh:
        (raw,) = wh.query("select count(*) from raw_streams.streams")[0]
        (kept,) = wh.query("select count(*) from marts.fct_listens")[0]
        rejected = dict(
            wh.query("select reject_reason, count(*) from marts.fct_rejected_listens group by 1")
        )
    assert raw == expected.raw_rows
    assert kept == expected.kept
    assert sum(rejected.values()) == sum(expected.rejected.values())
    assert raw == kept + sum(rejected.values()) + expected.duplicates

    # processed files are archived; the input prefix is empty
    landing = pipeline.landing_store(settings)
    assert landing.list("streams/") == []
    archived = landing.list("archive/streams/")
    assert len(archived) == len(list((source / "streams").iterdir()))

    # a rerun with nothing new does nothing and changes nothing
    before = marts_snapshot(settings)
    summary = pipeline.run(settings, progress=print)
    assert summary.plan is not None and not summary.plan.should_run
    assert summary.load is None and summary.dbt is None
    assert marts_snapshot(settings) == before
    assert "unit tests" not in out  # the build's progress counts none
    assert_unit_tests_left_to_ci(settings, None)


def test_duckdb_settings_reach_the_loaders_and_dbt(tmp_path: Path) -> None:
    """MUSIC_ELT_DUCKDB_* as DuckDB reports them on the loaders' connection and on dbt's."""
    settings = Settings.from_env(
        {"MUSIC_ELT_DUCKDB_MEMORY_LIMIT": "1GB", "MUSIC_ELT_DUCKDB_THREADS": "1"},
        workdir=tmp_path / "work",
    )
    query = (
        "select current_setting('memory_limit') as memory_limit, "
        "current_setting('threads') as threads, "
        "current_setting('temp_directory') as temp_directory"
    )
    expected = ("953.6 MiB", 1, str((tmp_path / "work" / "duckdb-tmp").resolve()))  # 1GB
    with open_warehouse(settings) as wh:
        assert tuple(wh.query(query)[0]) == expected

    from dbt.cli.main import dbtRunner

    with dbt_environment(settings):  # what run_dbt does, keeping the result `dbt show` returns
        args = [*dbt_args(settings, ["show", "--inline", query]), *console_args(tty=False)]
        result = dbtRunner().invoke(args)
    _release_duckdb()
    assert result.success, result.exception
    assert tuple(result.result.results[0].agate_table.rows[0]) == expected


def test_incremental_runs_equal_one_run(source: Path, expected: KpiResult, tmp_path: Path) -> None:
    """The same plays over three runs, the last bringing a late file for hours already
    computed and a re-delivered file, give the marts of one run over everything."""
    files = sorted((source / "streams").iterdir())
    late = files[0]  # the earliest hours: computed in run 1 from the other files of that day
    rest = files[1:]
    batches = [rest[: len(rest) // 2], rest[len(rest) // 2 :], [late]]
    staged = tmp_path / "staged"
    shutil.copytree(source, staged, ignore=shutil.ignore_patterns("streams"))
    (staged / "streams").mkdir()
    work = tmp_path / "work"
    for batch in batches:
        for path in batch:
            shutil.copy(path, staged / "streams" / path.name)
        run_cli("seed", "--from-dir", str(staged), "--workdir", str(work))
        run_cli("run", "--workdir", str(work))
    # a producer re-delivers a file under a new name: its plays are duplicates
    shutil.copy(late, staged / "streams" / f"redelivered-{late.name}")
    run_cli("seed", "--from-dir", str(staged), "--workdir", str(work))
    run_cli("run", "--workdir", str(work))
    incremental = Settings.from_env({}, workdir=work)
    assert_marts_match(expected, incremental)

    # and a full refresh of the same warehouse gives the same marts again
    before = marts_snapshot(incremental)
    run_dbt(incremental, ["build", "--full-refresh"])
    for mart, spec in MARTS.items():
        assert_rows_match(
            before[mart],
            fetch(incremental, mart),
            key=spec.key,
            columns=spec.columns,
            rel_tol=1e-12,
            label=f"full refresh of marts.{mart}",
        )


def test_postgres_warehouse_gives_the_same_marts(
    source: Path, expected: KpiResult, pg_database: dict[str, Any], tmp_path: Path
) -> None:
    work = tmp_path / "work"
    settings = postgres_settings(Settings.from_env({}, workdir=work), pg_database)
    from loaders.cli import seed

    seed(settings, source)
    summary = pipeline.run(settings, progress=print)
    assert_marts_match(expected, settings)
    assert_unit_tests_left_to_ci(settings, summary)

    # fct_top_artists_hourly built, fct_listening_kpis_hourly (which it reads for its stale
    # hours) missing: the next build recomputes every hour (PostgreSQL requires the stale-hours
    # query to type its empty case as a timestamp, not text)
    hourly = manifest.model(
        manifest.load_manifest(settings.dbt_manifest_path), "fct_listening_kpis_hourly"
    )
    assert hourly is not None
    with open_warehouse(settings) as wh, wh.transaction() as cur:
        cur.execute(f"drop table {hourly.relation} cascade")
    pipeline.run(settings, progress=print, force_build=True)
    assert_marts_match(expected, settings)


def _change_sources(source: Path, changed: Path) -> None:
    """A copy of ``source`` whose RDS tables changed after the first build: every 7th song
    moves to another genre and its popularity changes, the songs table gains a column, and
    users change country. The stream files stay the same."""
    shutil.copytree(source, changed)
    with (source / "songs.csv").open(newline="") as src:
        rows = list(csv.DictReader(src))
    names = [*rows[0].keys(), "mood"]
    for i, row in enumerate(rows):
        row["mood"] = "calm" if i % 2 else "bright"
        if i % 7 == 0:
            row["track_genre"] = "reclassified"
            row["popularity"] = str((int(row["popularity"] or 0) + 37) % 101)
    with (changed / "songs.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
    with (source / "users.csv").open(newline="") as src:
        users = list(csv.DictReader(src))
    for row in users:
        row["user_country"] = "Atlantis"
    with (changed / "users.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(users[0].keys()))
        writer.writeheader()
        writer.writerows(users)


def test_postgres_changed_snapshots_after_first_build(
    source: Path, expected: KpiResult, pg_database: dict[str, Any], tmp_path: Path
) -> None:
    """On PostgreSQL, new users/songs snapshots after the marts were built replace the raw
    rows in place (the staging views that read them keep working), and a songs change
    rebuilds the marts: they equal the reference over the new songs."""
    work = tmp_path / "work"
    settings = postgres_settings(Settings.from_env({}, workdir=work), pg_database)
    from loaders.cli import seed

    seed(settings, source)
    pipeline.run(settings, progress=print)
    assert_marts_match(expected, settings)

    changed = tmp_path / "changed"
    _change_sources(source, changed)
    seed(settings, changed)
    summary = pipeline.run(settings, progress=print)
    assert summary.plan is not None and summary.plan.songs_changed
    assert summary.load is not None and set(summary.load.snapshot_rows) == {"users", "songs"}
    assert_marts_match(reference(changed), settings)
    with open_warehouse(settings) as wh:
        assert wh.query("select count(*) from raw_rds.songs where mood is not null")[0][0] > 0
        countries = wh.query("select distinct user_country from marts.dim_users")
    assert countries == [("Atlantis",)]


SMALL_USERS = (
    "user_id,user_name,user_age,user_country,created_at\n"
    "1,Ann,30,DE,2026-01-01\n2,Bo,41,SE,2026-01-01\n"
)
SMALL_SONGS = (
    "track_id,artists,album_name,track_name,popularity,duration_ms,track_genre\n"
    "t1,Zed;alpha,A,One,50,200000,pop\n"
    "t2, Zed ;;Beta ,B,Two,70,100000,rock\n"
    "t2,Other,B,Two (dup),10,100000,jazz\n"
)
SMALL_STREAMS = (
    "user_id,track_id,listen_time\n"
    "1,t1,2026-01-05 10:00:00\n"
    "2,t2,2026-01-05T10:15:00Z\n"
    "1,t2,2026-01-05 12:20:00+02:00\n"
    "3,t9,2026-01-05 10:59:59.5\n"
    "1,t1,2026-01-05 10:00:00\n"
)


def test_changed_songs_rebuild_the_marts(tmp_path: Path) -> None:
    """On DuckDB, through the CLI: a new songs snapshot (a genre corrected at the source)
    reaches marts already built; the genre marts equal the reference over the new songs."""
    src, work = tmp_path / "src", tmp_path / "work"
    (src / "streams").mkdir(parents=True)
    (src / "users.csv").write_text(SMALL_USERS)
    (src / "songs.csv").write_text(SMALL_SONGS)
    (src / "streams/a_good.csv").write_text(SMALL_STREAMS)
    assert cli(["seed", "--from-dir", str(src), "--workdir", str(work)]) == 0
    assert cli(["run", "--workdir", str(work)]) == 0
    (src / "songs.csv").write_text(SMALL_SONGS.replace("One,50,200000,pop", "One,50,200000,dance"))
    assert cli(["seed", "--from-dir", str(src), "--workdir", str(work)]) == 0
    assert cli(["run", "--workdir", str(work)]) == 0

    settings = Settings.from_env({}, workdir=work)
    files = sorted((src / "streams").iterdir())
    expected = compute_kpis(src / "users.csv", src / "songs.csv", files, datetime.now())
    spec = MARTS["fct_genre_kpis_daily"]
    rows = published(settings, f"select {', '.join(spec.columns)} from marts.fct_genre_kpis_daily")
    assert "dance" in {row[1] for row in rows}
    assert_rows_match(expected.genre_daily, rows, key=spec.key, columns=spec.columns)


def test_demo_from_dir_prints_kpis(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    run_cli("demo", "--from-dir", str(source), "--workdir", str(work))
    out = capsys.readouterr().out
    for mart in MARTS:
        assert f"marts.{mart}" in out
    assert f"make docs WORKDIR={work}" in out
    # quiet and informative: one screen, no colour codes (not a terminal here), dbt's progress
    # instead of its log, each by-design warning explained in one line
    lines = out.splitlines()
    assert len(lines) <= 60, out
    assert "\x1b" not in out
    assert any(line.startswith("  dbt build: ") for line in lines), out
    warnings = [line for line in lines if line.startswith("  warn: ")]
    assert any("plays by users not in RDS: kept" in line for line in warnings), out
    assert not any("rows found by warn test" in line for line in warnings), out
    # dbt's full log is in the work directory, without colour codes
    log = (work / "dbt" / "logs" / "dbt.log").read_text()
    assert "Running with dbt" in log and "START test" in log and "\x1b" not in log
    assert (work / "dbt" / "target" / "catalog.json").is_file()
    assert Settings.from_env({}, workdir=work).warehouse.duckdb_path.is_file()
