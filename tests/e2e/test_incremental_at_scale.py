"""Incremental runs at scale equal a full refresh (the contract, "Incremental equivalence").

About 1M generated plays over 8 days (the scenarios of bench/scale_bench.py) on the embedded
DuckDB stack. Work directory A takes them the way production does:

1. seed days 1-7, ``run`` (the first build);
2. the 8th day's files land (on-time plays of day 8, a late file of day 7 and a re-delivered
   copy of a day-1 file under a day-8 name), ``run``: the incremental day;
3. ``run --build`` with nothing new: a rebuild that must change nothing;
4. a new songs snapshot (every 7th song to another genre, and popularity, names and artist
   credits of others), ``run``.

After steps 2, 3 and 4, A's marts are compared row for row, every column exactly as stored (same
column names and types, same multiset of rows), with ``dbt build --full-refresh`` on a copy of
A's warehouse (the same raw rows, so even load times agree). After step 4 also with work
directory B, the same final inputs in one run from scratch (there only the load metadata, which
records when each row was loaded, may differ), and with the independent computation of
tests/kpi_reference.py (relative tolerance 1e-9, as the contract says).

The check after step 2 matters on its own: a songs change may rebuild everything (a full
refresh), which would hide a wrong incremental day from the final comparisons.

The compared tables are every model dbt persists (from the dbt manifest): the KPI marts (tag
``kpi``), fct_listens, fct_rejected_listens, the dimensions and the incremental staging table
stg_streams__listens. None of the runs may be a full refresh (the songs run recomputes the KPI
periods from fct_listens and re-parses no stream row). The same path runs on PostgreSQL at 50k
plays.
"""

from __future__ import annotations

import csv
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from loaders import manifest, pipeline
from loaders.config import Settings
from loaders.dbt import run_dbt
from loaders.demo.generate import generate
from loaders.demo.seed import seed
from loaders.landing import STREAMS_PREFIX
from tests.checks import published
from tests.conftest import postgres_settings
from tests.kpi_reference import MARTS, KpiResult, compute_kpis, diff_rows

pytestmark = pytest.mark.slow

DAYS = 8
START = date(2026, 1, 5)  # generate()'s first day
LAST_DAY = f"listens_{START + timedelta(days=DAYS - 1)}_"  # the 8th day's delivery files
# Columns that record when (and in which run and load) a row was loaded: they differ between two
# work directories fed the same files, and only there.
PER_BUILD = ("int_listen_dates_stale", "int_listen_hours_stale")  # one build's work list
LOAD_METADATA = frozenset(
    {
        "first_load_seq",
        "last_load_seq",
        "_load_seq",
        "loaded_at",
        "load_id",
        "_loaded_at",
        "_load_id",
    }
)


@dataclass(frozen=True)
class Inputs:
    """A generated data set split into what work directory A receives, step by step."""

    first: Path  # users.csv, songs.csv, streams/ of days 1-7
    last_day: tuple[Path, ...]  # the stream files delivered on day 8
    final: Path  # users.csv, the changed songs.csv, streams/ of all 8 days

    def stream_files(self) -> list[Path]:
        return sorted((self.final / "streams").iterdir())


def split_inputs(data: Path, root: Path) -> Inputs:
    first, final = root / "first", root / "final"
    (first / "streams").mkdir(parents=True)
    (final / "streams").mkdir(parents=True)
    for name in ("users.csv", "songs.csv"):
        shutil.copy(data / name, first / name)
    shutil.copy(data / "users.csv", final / "users.csv")
    change_songs(data / "songs.csv", final / "songs.csv")
    last_day = []
    for path in sorted((data / "streams").iterdir()):
        (final / "streams" / path.name).hardlink_to(path)
        if path.name.startswith(LAST_DAY):
            last_day.append(path)
        else:
            (first / "streams" / path.name).hardlink_to(path)
    assert last_day and len(last_day) < len(list((final / "streams").iterdir()))
    return Inputs(first=first, last_day=tuple(last_day), final=final)


def change_songs(songs: Path, out: Path) -> None:
    """A new songs snapshot, no new plays: every 7th song to another genre (as the scale bench
    does), and popularity, name or artist credit of other songs, so that every mart that reads
    a song attribute must change for days already built."""
    with songs.open(newline="", encoding="utf-8") as src:
        rows = list(csv.DictReader(src))
    for i, row in enumerate(rows):
        if i % 7 == 0:
            row["track_genre"] = "reclassified"
        if i % 11 == 0:
            row["popularity"] = str((int(row["popularity"] or 0) + 37) % 101)
        if i % 13 == 0:
            row["track_name"] = f"{row['track_name']} (Remastered)"
        if i % 17 == 0:
            row["artists"] = f"{row['artists']};Guest Star {i % 5}"
    with out.open("w", newline="", encoding="utf-8") as dst:
        writer = csv.DictWriter(dst, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def reference(inputs: Inputs) -> KpiResult:
    """tests/kpi_reference.py over the final inputs: all 8 days' files, the changed songs."""
    final = inputs.final
    return compute_kpis(
        final / "users.csv", final / "songs.csv", inputs.stream_files(), datetime.now()
    )


# -- comparing warehouses -------------------------------------------------------------------------


def compared_relations(settings: Settings) -> list[str]:
    """Every model dbt persists (tables and incremental models, as schema.name, from the dbt
    manifest): the KPI marts, fct_listens, fct_rejected_listens, the dimensions and the
    incremental staging table; views are computed from these and the raw tables. The stale
    periods models are left out: they hold what one build had to recompute (nothing on a full
    refresh), not a result."""
    project = manifest.load_manifest(settings.dbt_manifest_path)
    relations = {
        f"{node['schema']}.{node.get('alias') or node['name']}"
        for node in project["nodes"].values()
        if node.get("resource_type") == "model"
        and node["config"]["materialized"] in ("table", "incremental")
        and node["name"] not in PER_BUILD
    }
    kpis = manifest.kpi_marts(project)
    assert {mart.name for mart in kpis} >= set(MARTS), f"KPI marts in the manifest: {kpis}"
    facts = [manifest.model(project, name) for name in ("fct_listens", manifest.REJECTS_MODEL)]
    wanted = {mart.relation for mart in (*kpis, *facts) if mart is not None}
    assert len(wanted) == len(kpis) + 2 and wanted <= relations, (wanted, relations)
    return sorted(relations)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def duckdb_differences(
    left: Path, right: Path, relations: Sequence[str], *, ignore: frozenset[str], limit: int = 5
) -> list[str]:
    """How the relations of two DuckDB files differ: columns (names, types, order), then rows
    as multisets (EXCEPT ALL both ways, every column compared as stored, bar ``ignore``)."""
    import duckdb

    problems = []
    with duckdb.connect() as conn:
        conn.execute(f"attach {_literal(str(left))} as left_db (read_only)")
        conn.execute(f"attach {_literal(str(right))} as right_db (read_only)")
        for relation in relations:
            schema, table = relation.split(".")
            columns = {}
            for db in ("left_db", "right_db"):
                columns[db] = conn.execute(
                    "select column_name, data_type from information_schema.columns "
                    "where table_catalog = ? and table_schema = ? and table_name = ? "
                    "order by ordinal_position",
                    [db, schema, table],
                ).fetchall()
            if not columns["left_db"]:
                problems.append(f"{relation}: missing on the left")
                continue
            if columns["left_db"] != columns["right_db"]:
                problems.append(
                    f"{relation}: columns {columns['left_db']} != {columns['right_db']}"
                )
                continue
            names = [name for name, _ in columns["left_db"] if name not in ignore]
            select = ", ".join(f'"{name}"' for name in names)
            counts = [
                conn.execute(f"select count(*) from {db}.{relation}").fetchall()[0][0]
                for db in ("left_db", "right_db")
            ]
            if counts[0] == 0:
                problems.append(f"{relation}: empty on the left, nothing compared")
            if counts[0] != counts[1]:
                problems.append(f"{relation}: {counts[0]} rows on the left, {counts[1]} right")
            for a, b, label in (("left_db", "right_db", "left"), ("right_db", "left_db", "right")):
                diff = (
                    f"select {select} from {a}.{relation} "
                    f"except all select {select} from {b}.{relation}"
                )
                (n,) = conn.execute(f"select count(*) from ({diff})").fetchall()[0]
                if n:
                    sample = conn.execute(f"{diff} order by all limit {limit}").fetchall()
                    problems.append(
                        f"{relation}: {n} rows only on the {label} ({', '.join(names)}), e.g.\n"
                        + "\n".join(f"      {row}" for row in sample)
                    )
    return problems


def postgres_rows(
    db: dict[str, Any], relation: str
) -> tuple[list[tuple[str, str]], Counter[tuple[Any, ...]]]:
    """A relation's columns (name, type) and its rows as a multiset."""
    schema, table = relation.split(".")
    conn = psycopg2.connect(**db)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "select column_name, data_type from information_schema.columns "
                "where table_schema = %s and table_name = %s order by ordinal_position",
                (schema, table),
            )
            columns = [(str(name), str(kind)) for name, kind in cur.fetchall()]
            if not columns:
                return [], Counter()
            cur.execute(f"select * from {relation}")
            return columns, Counter(cur.fetchall())
    finally:
        conn.close()


def postgres_differences(
    left: dict[str, Any],
    right: dict[str, Any],
    relations: Sequence[str],
    *,
    ignore: frozenset[str],
    limit: int = 5,
) -> list[str]:
    """As :func:`duckdb_differences`, for two PostgreSQL databases (compared in Python)."""
    problems = []
    for relation in relations:
        (left_columns, left_rows), (right_columns, right_rows) = (
            postgres_rows(left, relation),
            postgres_rows(right, relation),
        )
        if not left_columns:
            problems.append(f"{relation}: missing on the left")
            continue
        if left_columns != right_columns:
            problems.append(f"{relation}: columns {left_columns} != {right_columns}")
            continue
        if not left_rows:
            problems.append(f"{relation}: empty on the left, nothing compared")
        keep = [i for i, (name, _) in enumerate(left_columns) if name not in ignore]
        sides = []
        for rows in (left_rows, right_rows):
            projected: Counter[tuple[Any, ...]] = Counter()
            for row, n in rows.items():
                projected[tuple(row[i] for i in keep)] += n
            sides.append(projected)
        names = ", ".join(left_columns[i][0] for i in keep)
        for only, label in ((sides[0] - sides[1], "left"), (sides[1] - sides[0], "right")):
            if only:
                sample = sorted(only.elements(), key=repr)[:limit]
                problems.append(
                    f"{relation}: {only.total()} rows only on the {label} ({names}), e.g.\n"
                    + "\n".join(f"      {row}" for row in sample)
                )
    return problems


def reference_differences(expected: KpiResult, settings: Settings) -> list[str]:
    """How the KPI marts differ from tests/kpi_reference.py (relative tolerance 1e-9)."""
    problems = []
    for mart, spec in MARTS.items():
        rows = published(settings, f"select {', '.join(spec.columns)} from marts.{mart}")
        found = diff_rows(expected.rows(mart), rows, key=spec.key, columns=spec.columns, limit=5)
        problems += [f"marts.{mart}: {problem}" for problem in found]
    return problems


# -- the scenario ---------------------------------------------------------------------------------


@dataclass
class Scenario:
    """Work directory A's runs, and the comparisons after them; problems are collected so that
    one failure shows every stage that disagrees."""

    inputs: Inputs
    settings_for: Callable[[str], Settings]  # a work directory (and warehouse) by name
    differences: Callable[[Settings, Settings, Sequence[str], frozenset[str]], list[str]]
    full_refresh_copy: Callable[[Settings, str], Settings]
    problems: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def timed(self, label: str, action: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = action()
        self.timings[label] = round(time.perf_counter() - started, 1)
        return result

    def compare(self, stage: str, a: Settings, b: Settings, *, ignore: frozenset[str]) -> None:
        found = self.differences(a, b, compared_relations(a), ignore)
        self.problems += [f"{stage}: {problem}" for problem in found]

    def check_reference(self, stage: str, expected: KpiResult, settings: Settings) -> None:
        self.problems += [f"{stage}: {p}" for p in reference_differences(expected, settings)]

    def play(self) -> None:
        inputs = self.inputs
        a = self.settings_for("a")
        seed(a, inputs.first, progress=print)
        first = self.timed("A: run, days 1-7", lambda: pipeline.run(a, progress=print))
        assert first.plan is not None and first.dbt is not None

        landing = pipeline.landing_store(a)
        for path in inputs.last_day:
            landing.put(STREAMS_PREFIX + path.name, path)
        day = self.timed("A: run, day 8 (incremental)", lambda: pipeline.run(a, progress=print))
        assert day.plan is not None and day.dbt is not None
        command = day.dbt.command.split()  # incremental: a run's build, no --full-refresh
        assert command[0] == "build" and "--full-refresh" not in command, day.dbt.command
        assert len(day.plan.stream_files) == len(inputs.last_day), day.plan.description

        copy = self.timed(
            "copy of A, day 8: dbt build --full-refresh",
            lambda: self.full_refresh_copy(a, "a-day8"),
        )
        self.compare("day 8, incremental vs full refresh", a, copy, ignore=frozenset())

        rebuild = self.timed(
            "A: run --build, nothing new", lambda: pipeline.run(a, progress=print, force_build=True)
        )
        assert rebuild.plan is not None and rebuild.dbt is not None
        assert "--full-refresh" not in rebuild.dbt.command.split(), rebuild.dbt.command
        assert not rebuild.plan.stream_files and not rebuild.plan.snapshots, rebuild.plan
        self.compare("rebuild with nothing new vs full refresh", a, copy, ignore=frozenset())

        seed(a, inputs.final, progress=print)  # the new songs; every stream file is known
        songs = self.timed("A: run, changed songs", lambda: pipeline.run(a, progress=print))
        assert songs.plan is not None and songs.dbt is not None
        # a songs snapshot recomputes the KPI periods from fct_listens, no full refresh
        assert "--full-refresh" not in songs.dbt.command.split(), songs.dbt.command
        assert not songs.plan.stream_files, songs.plan.description
        assert [e.table for e in songs.plan.snapshots] == ["songs"], songs.plan.description

        copy = self.timed(
            "copy of A, changed songs: dbt build --full-refresh",
            lambda: self.full_refresh_copy(a, "a-songs"),
        )
        self.compare("changed songs, incremental vs full refresh", a, copy, ignore=frozenset())

        b = self.settings_for("b")
        seed(b, inputs.final, progress=print)
        self.timed("B: one run from scratch", lambda: pipeline.run(b, progress=print))
        self.compare("changed songs, A vs B (one run)", a, b, ignore=LOAD_METADATA)
        expected = self.timed("reference, changed songs", lambda: reference(inputs))
        self.check_reference("changed songs vs reference", expected, a)
        print("timings (s):", self.timings)


# -- DuckDB, ~1M plays ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs_1m(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    root = tmp_path_factory.mktemp("scale-1m")
    generate(root / "data", streams=1_000_000, days=DAYS)
    return split_inputs(root / "data", root)


def duckdb_full_refresh_copy(root: Path) -> Callable[[Settings, str], Settings]:
    def make(settings: Settings, name: str) -> Settings:
        copy = settings.with_workdir(root / name)
        copy.warehouse.duckdb_path.parent.mkdir(parents=True)
        shutil.copy(settings.warehouse.duckdb_path, copy.warehouse.duckdb_path)
        wal = settings.warehouse.duckdb_path.with_name(settings.warehouse.duckdb_path.name + ".wal")
        assert not wal.exists(), f"{wal}: the warehouse was not checkpointed"
        run_dbt(copy, ["build", "--full-refresh"])
        return copy

    return make


def test_incremental_runs_at_1m_plays_equal_full_refresh_duckdb(
    inputs_1m: Inputs, tmp_path: Path
) -> None:
    scenario = Scenario(
        inputs=inputs_1m,
        settings_for=lambda name: Settings.from_env({}, workdir=tmp_path / name),
        differences=lambda a, b, relations, ignore: duckdb_differences(
            a.warehouse.duckdb_path, b.warehouse.duckdb_path, relations, ignore=ignore
        ),
        full_refresh_copy=duckdb_full_refresh_copy(tmp_path),
    )
    scenario.play()
    assert not scenario.problems, "\n  ".join(["incremental != full refresh:", *scenario.problems])


# -- PostgreSQL, 50k plays ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs_50k(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    root = tmp_path_factory.mktemp("scale-50k")
    generate(root / "data", streams=50_000, days=DAYS, users=2_000, songs=1_500)
    return split_inputs(root / "data", root)


def connection_fields(settings: Settings) -> dict[str, Any]:
    s = settings.warehouse
    return {"host": s.host, "port": s.port, "user": s.user, "dbname": s.dbname}


def test_incremental_runs_equal_full_refresh_postgres(
    inputs_50k: Inputs, pg_server: Any, tmp_path: Path
) -> None:
    def create_database(name: str, template: str | None = None) -> dict[str, Any]:
        admin = psycopg2.connect(pg_server.get_uri())
        admin.autocommit = True
        dbname = f"{tmp_path.name[:40]}_{name}".lower().replace("-", "_")
        with admin.cursor() as cur:
            statement = sql.SQL("create database {}").format(sql.Identifier(dbname))
            if template is not None:
                statement += sql.SQL(" template {}").format(sql.Identifier(template))
            cur.execute(statement)
        info = admin.get_dsn_parameters()
        admin.close()
        return {
            "host": info["host"],
            "port": int(info["port"]),
            "user": info["user"],
            "dbname": dbname,
        }

    def settings_for(name: str) -> Settings:
        return postgres_settings(
            Settings.from_env({}, workdir=tmp_path / name), create_database(name)
        )

    def full_refresh_copy(settings: Settings, name: str) -> Settings:
        db = create_database(name, template=settings.warehouse.dbname)
        copy = postgres_settings(settings.with_workdir(tmp_path / name), db)
        run_dbt(copy, ["build", "--full-refresh"])
        return copy

    scenario = Scenario(
        inputs=inputs_50k,
        settings_for=settings_for,
        differences=lambda a, b, relations, ignore: postgres_differences(
            connection_fields(a), connection_fields(b), relations, ignore=ignore
        ),
        full_refresh_copy=full_refresh_copy,
    )
    scenario.play()
    assert not scenario.problems, "\n  ".join(["incremental != full refresh:", *scenario.problems])
