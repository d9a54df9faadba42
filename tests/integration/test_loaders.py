"""Extraction, landing, loading, ledger, quarantine and archive against real services:
PostgreSQL from pgserver (as the RDS and as a warehouse) and moto's S3 server on loopback."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest

from loaders import pipeline, rds
from loaders.config import Settings
from loaders.demo.seed import seed_table
from loaders.landing import LocalLanding, S3Landing
from loaders.warehouse import open_warehouse
from tests.conftest import pg_dsn, postgres_settings

USERS = "user_id,user_name,user_age,user_country,created_at\n" + "".join(
    f"{i},User {i},{20 + i % 50},DE,2025-01-{1 + i % 28:02d}\n" for i in range(1, 26)
)
SONGS = (
    "id,track_id,artists,album_name,track_name,popularity,duration_ms,explicit,track_genre\n"
    '0,t1,"A;B",Album,"Song, ""one""",50,200000,False,pop\n'
    "1,t2,Café Ø,Albüm,Zwei,60,180000,True,rock\n"
)
GOOD = "user_id,track_id,listen_time\n1,t1,2026-01-05 10:00:00\n2,t2,2026-01-05T10:30:00Z\n,t1,x\n"


def write_source(root: Path) -> Path:
    (root / "streams").mkdir(parents=True)
    (root / "users.csv").write_text(USERS)
    (root / "songs.csv").write_text(SONGS, encoding="utf-8")
    return root


def put(landing: Any, key: str, data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    landing.put(key, path)


# -- RDS extraction ---------------------------------------------------------------------------
def test_extract_in_batches_is_deterministic_and_detects_change(
    pg_database: dict[str, Any], tmp_path: Path
) -> None:
    src = write_source(tmp_path / "src")
    settings = Settings.from_env({}, workdir=tmp_path / "w").model_copy(
        update={"rds_dsn": pg_dsn(pg_database), "batch_size": 10}
    )
    landing = LocalLanding(tmp_path / "landing")
    with rds.connect(settings) as conn:
        assert seed_table(conn, "users", src / "users.csv") == 25
        with conn.cursor() as cur:
            cur.execute("alter table users add primary key (user_id)")
        conn.commit()
        first = rds.extract_table(
            conn, "users", landing, run_id="r1", batch_size=10, progress=print
        )
        second = rds.extract_table(
            conn, "users", landing, run_id="r2", batch_size=10, progress=print
        )
        with conn.cursor() as cur:
            cur.execute("update users set user_age = 99 where user_id = 7")
        conn.commit()
        third = rds.extract_table(
            conn, "users", landing, run_id="r3", batch_size=10, progress=print
        )
    assert first.row_count == 25
    assert len(first.parts) == 3  # 10 + 10 + 5
    assert first.sha256 == second.sha256  # same content, same fingerprint
    assert third.sha256 != first.sha256
    with gzip.open(landing.local_path(first.parts[0]), "rt") as handle:  # type: ignore[arg-type]
        lines = handle.read().splitlines()
    assert lines[0] == "user_id,user_name,user_age,user_country,created_at"
    assert lines[1].startswith("1,User 1,21,DE,")
    assert len(lines) == 11
    assert rds.latest_extract(landing, "users") == third


def test_extract_reports_missing_table_and_unreachable_server(
    pg_database: dict[str, Any], tmp_path: Path
) -> None:
    settings = Settings.from_env({}, workdir=tmp_path / "w").model_copy(
        update={"rds_dsn": pg_dsn(pg_database)}
    )
    with rds.connect(settings) as conn, pytest.raises(ValueError, match="no table 'songs'"):
        rds.extract_table(conn, "songs", LocalLanding(tmp_path), run_id="r", batch_size=5)
    bad = settings.model_copy(
        update={"rds_dsn": "host=127.0.0.1 port=1 user=x password=secret dbname=x"}
    )
    with pytest.raises(ConnectionError) as info, rds.connect(bad, wait_seconds=0.5):
        pass
    assert "secret" not in str(info.value)
    assert "password=***" in str(info.value)


# -- landing on S3 ----------------------------------------------------------------------------
def test_s3_landing_lists_reads_and_moves_idempotently(s3_endpoint: str, s3_bucket: str) -> None:
    landing = S3Landing(f"s3://{s3_bucket}/landing", endpoint_url=s3_endpoint)
    landing.write_text("streams/a.csv", GOOD)
    [obj] = landing.list("streams/")
    assert obj.key == "streams/a.csv" and obj.size == len(GOOD)
    with landing.open("streams/a.csv") as handle:
        assert handle.read().decode() == GOOD
    # A move interrupted after its copy: both objects exist. Finishing it deletes the source.
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.copy_object(
        Bucket=s3_bucket,
        CopySource={"Bucket": s3_bucket, "Key": "landing/streams/a.csv"},
        Key="landing/archive/streams/2026-01-05/a.csv",
    )
    landing.move("streams/a.csv", "archive/streams/2026-01-05/a.csv")
    landing.move("streams/a.csv", "archive/streams/2026-01-05/a.csv")  # again: nothing to do
    assert landing.list("streams/") == []
    assert [o.key for o in landing.list("archive/")] == ["archive/streams/2026-01-05/a.csv"]
    with pytest.raises(FileNotFoundError):
        landing.move("streams/never.csv", "archive/streams/x/never.csv")


# -- loading, ledger, rejects -----------------------------------------------------------------
def _load_cases(settings: Settings, landing: Any, tmp_path: Path) -> dict[str, Any]:
    put(landing, "streams/a.csv", GOOD.encode(), tmp_path)
    put(landing, "streams/b.csv.gz", gzip.compress(GOOD.replace("t1", "t3").encode()), tmp_path)
    # columns in another order plus an extra column: picked by name
    put(
        landing,
        "streams/c.csv",
        b"listen_time,extra,track_id,user_id\n2026-01-06 01:00:00,x,t2,5\n",
        tmp_path,
    )
    put(landing, "streams/no_track.csv", b"user_id,listen_time\n1,2026-01-05 10:00:00\n", tmp_path)
    put(landing, "streams/empty.csv", b"", tmp_path)
    put(landing, "streams/ragged.csv", b"user_id,track_id,listen_time\n1,t1\n", tmp_path)
    put(landing, "streams/binary.csv.gz", b"\x1f\x8b\x08garbage", tmp_path)
    put(landing, "streams/header_only.csv", b"user_id,track_id,listen_time\n", tmp_path)
    plan = pipeline.plan_run(settings, landing, [], run_id="load-1")
    report = pipeline.load_all(settings, landing, plan)
    again = pipeline.plan_run(settings, landing, [], run_id="load-2")
    with open_warehouse(settings) as wh:
        rows = wh.query(
            "select _source_file, _line_number, user_id, track_id, listen_time "
            "from raw_streams.streams order by _source_file, _line_number"
        )
        ledger = wh.query(
            "select object_key, status, row_count, reason from raw_meta.load_ledger "
            "order by object_key"
        )
    return {"report": report, "again": again, "rows": rows, "ledger": ledger}


@pytest.mark.parametrize("warehouse_kind", ["duckdb", "postgres"])
@pytest.mark.parametrize("landing_kind", ["local", "s3"])
def test_load_exactly_once_with_rejects(
    warehouse_kind: str,
    landing_kind: str,
    request: pytest.FixtureRequest,
    settings: Settings,
    tmp_path: Path,
) -> None:
    if warehouse_kind == "postgres":
        settings = postgres_settings(settings, request.getfixturevalue("pg_database"))
    if landing_kind == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        endpoint = request.getfixturevalue("s3_endpoint")
        settings = settings.model_copy(
            update={"landing_url": f"s3://{bucket}/land", "s3_endpoint_url": endpoint}
        )
    landing = pipeline.landing_store(settings)
    out = _load_cases(settings, landing, tmp_path)
    report = out["report"]

    assert sorted(o.key for o in report.files_loaded) == [
        "streams/a.csv",
        "streams/b.csv.gz",
        "streams/c.csv",
        "streams/header_only.csv",
    ]
    assert report.stream_rows == 7
    rejected = dict((o.key, reason) for o, reason in report.files_rejected)
    assert set(rejected) == {
        "streams/no_track.csv",
        "streams/empty.csv",
        "streams/ragged.csv",
        "streams/binary.csv.gz",
    }
    assert "track_id" in rejected["streams/no_track.csv"]
    assert "empty" in rejected["streams/empty.csv"]
    # raw rows are a faithful copy, with the physical line of each record
    assert out["rows"][:3] == [
        ("streams/a.csv", 2, "1", "t1", "2026-01-05 10:00:00"),
        ("streams/a.csv", 3, "2", "t2", "2026-01-05T10:30:00Z"),
        ("streams/a.csv", 4, None, "t1", "x"),
    ]
    assert ("streams/c.csv", 2, "5", "t2", "2026-01-06 01:00:00") in out["rows"]
    # refused files are in quarantine with their reason, and in the ledger
    quarantined = {o.key for o in landing.list("quarantine/")}
    assert "quarantine/streams/ragged.csv" in quarantined
    assert "quarantine/streams/ragged.csv.reason.txt" in quarantined
    statuses = {key: (status, n) for key, status, n, _ in out["ledger"]}
    assert statuses["streams/a.csv"] == ("loaded", 3)
    assert statuses["streams/ragged.csv"] == ("rejected", 0)
    # counts in equal counts out: every landed file is loaded or rejected, every row is in raw
    assert len(out["ledger"]) == 8
    assert sum(n for _, status, n, _ in out["ledger"] if status == "loaded") == len(out["rows"])
    # a second look finds nothing new; the loaded files wait for archiving
    again = out["again"]
    assert again.stream_files == ()
    assert len(again.archive_ready) == 4
    # loading the same object again (a retried task) is a no-op
    obj = next(o for o in again.archive_ready if o.key == "streams/a.csv")
    with pipeline.warehouse(settings) as wh:
        outcome = wh.load_stream_file(landing, obj, load_id="load-2", loaded_at=pipeline.utcnow())
        assert outcome.status == "skipped"
        assert wh.query("select count(*) from raw_streams.streams")[0][0] == 7


def test_snapshot_load_replaces_table_and_skips_unchanged(
    pg_database: dict[str, Any], settings: Settings, tmp_path: Path
) -> None:
    src = write_source(tmp_path / "src")
    settings = settings.model_copy(update={"rds_dsn": pg_dsn(pg_database), "batch_size": 1})
    landing = pipeline.landing_store(settings)
    with rds.connect(settings) as conn:
        seed_table(conn, "users", src / "users.csv")
        seed_table(conn, "songs", src / "songs.csv")
    extracts = pipeline.extract(settings, landing, "run1")
    plan = pipeline.plan_run(settings, landing, extracts, run_id="run1")
    assert {e.table for e in plan.snapshots} == {"users", "songs"}
    pipeline.load_all(settings, landing, plan)
    with open_warehouse(settings) as wh:
        songs = wh.query(
            "select id, track_id, artists, track_name, explicit from raw_rds.songs order by id"
        )
    assert songs == [
        ("0", "t1", "A;B", 'Song, "one"', "False"),
        ("1", "t2", "Café Ø", "Zwei", "True"),
    ]
    # unchanged source: the next extract has the same fingerprint and nothing is reloaded
    extracts = pipeline.extract(settings, landing, "run2")
    assert pipeline.plan_run(settings, landing, extracts, run_id="run2").snapshots == ()
    with psycopg2.connect(pg_dsn(pg_database)) as conn, conn.cursor() as cur:
        cur.execute("delete from songs where id = '1'")
    extracts = pipeline.extract(settings, landing, "run3")
    plan = pipeline.plan_run(settings, landing, extracts, run_id="run3")
    assert [e.table for e in plan.snapshots] == ["songs"]
    pipeline.load_all(settings, landing, plan)
    with open_warehouse(settings) as wh:
        assert wh.query("select count(*), max(_load_id) from raw_rds.songs") == [(1, "run3")]


def test_archive_moves_loaded_files_once(settings: Settings, tmp_path: Path) -> None:
    landing = pipeline.landing_store(settings)
    put(landing, "streams/day1/a.csv", GOOD.encode(), tmp_path)
    plan = pipeline.plan_run(settings, landing, [], run_id="l1")
    report = pipeline.load_all(settings, landing, plan)
    with pipeline.warehouse(settings) as wh, wh.transaction() as cur:  # loaded days ago
        cur.execute("update raw_meta.load_ledger set loaded_at = timestamp '2026-01-07 23:59:00'")
    moved = pipeline.archive(settings, landing, plan, report)
    assert moved == ["archive/streams/2026-01-07/day1/a.csv"]
    # a rerun (today) of a finished or interrupted move uses the same destination
    assert pipeline.archive(settings, landing, plan, report) == moved
    assert landing.list("streams/") == []


@pytest.mark.parametrize("warehouse_kind", ["duckdb", "postgres"])
def test_an_outage_while_loading_fails_the_run_and_touches_nothing(
    warehouse_kind: str,
    request: pytest.FixtureRequest,
    settings: Settings,
    s3_bucket: str,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    """A file that vanished from S3 after planning, and an S3 endpoint that stopped answering,
    are outages: the load raises ServiceOutage naming it, nothing is quarantined or recorded,
    and the next run loads the files."""
    from loaders.errors import ServiceOutage

    if warehouse_kind == "postgres":
        settings = postgres_settings(settings, request.getfixturevalue("pg_database"))
    settings = settings.model_copy(
        update={"landing_url": f"s3://{s3_bucket}/land", "s3_endpoint_url": s3_endpoint}
    )
    landing = pipeline.landing_store(settings)
    put(landing, "streams/a.csv", GOOD.encode(), tmp_path)
    put(landing, "streams/b.csv", GOOD.replace("t1", "t9").encode(), tmp_path)
    plan = pipeline.plan_run(settings, landing, [], run_id="r1")
    landing.client.delete_object(Bucket=s3_bucket, Key="land/streams/a.csv")
    with pytest.raises(ServiceOutage, match=r"^S3 object missing while loading streams/a\.csv"):
        pipeline.load_all(settings, landing, plan)

    down = settings.model_copy(
        update={"s3_endpoint_url": "http://127.0.0.1:9"}
    )  # nothing listens there
    with pytest.raises(ServiceOutage, match=r"^network while loading streams/a\.csv"):
        pipeline.load_all(down, pipeline.landing_store(down), plan)

    assert landing.list("quarantine/") == []
    with pipeline.warehouse(settings) as wh:
        assert wh.query("select count(*) from raw_meta.load_ledger")[0][0] == 0
    put(landing, "streams/a.csv", GOOD.encode(), tmp_path)  # S3 is back
    report = pipeline.load_all(
        settings, landing, pipeline.plan_run(settings, landing, [], run_id="r2")
    )
    assert sorted(o.key for o in report.files_loaded) == ["streams/a.csv", "streams/b.csv"]


@pytest.mark.parametrize("warehouse_kind", ["duckdb", "postgres"])
def test_line_numbers_are_physical_lines_after_quoted_newlines(
    warehouse_kind: str, request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> None:
    if warehouse_kind == "postgres":
        settings = postgres_settings(settings, request.getfixturevalue("pg_database"))
    landing = pipeline.landing_store(settings)
    body = (
        'user_id,track_id,listen_time\n1,"t\nx",2026-01-05 10:00:00\n2,t2,2026-01-05 10:00:00\n'
        '3,"multi\r\nline\nfield",2026-01-05 10:00:00\n4,t4,2026-01-05 10:00:00\n'
    )
    put(landing, "streams/quoted.csv", body.encode(), tmp_path)
    report = pipeline.load_all(
        settings, landing, pipeline.plan_run(settings, landing, [], run_id="q")
    )
    assert report.files_rejected == ()
    with open_warehouse(settings) as wh:
        rows = wh.query("select user_id, _line_number from raw_streams.streams order by user_id")
    assert rows == [("1", 2), ("2", 4), ("3", 5), ("4", 8)]


def test_a_query_interrupted_by_ctrl_c_stops_the_run_as_an_interrupt(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB turns Ctrl-C during a COPY into "Query interrupted": the run stops as an
    interrupt naming the step, not as an outage (exit 2) or a rejected file."""
    import duckdb

    from loaders import cli
    from loaders.errors import Interrupted
    from loaders.warehouse import DuckDBWarehouse

    landing = pipeline.landing_store(settings)
    put(landing, "streams/a.csv", GOOD.encode(), tmp_path)

    def interrupted(*args: Any, **kwargs: Any) -> str:
        raise duckdb.InterruptException("INTERRUPT Error: Interrupted!")

    monkeypatch.setattr(DuckDBWarehouse, "_copy_to_temp", interrupted)
    monkeypatch.setattr(pipeline, "extract", lambda *args, **kwargs: [])  # no RDS here
    monkeypatch.setattr(pipeline.rds, "require_source", lambda settings: None)
    with pytest.raises(Interrupted) as stopped:
        pipeline.run(settings, progress=print)
    assert (stopped.value.signal_name, stopped.value.step) == ("Ctrl-C", "load")
    assert cli.failure(stopped.value)[0] == 130
    assert landing.list("quarantine/") == []
    with pipeline.warehouse(settings) as wh:
        assert wh.query("select count(*) from raw_meta.load_ledger")[0][0] == 0


@pytest.mark.parametrize("warehouse_kind", ["duckdb", "postgres"])
def test_setup_numbers_a_ledger_from_before_the_load_sequence(
    warehouse_kind: str, request: pytest.FixtureRequest, settings: Settings
) -> None:
    """A warehouse set up before the load sequence (raw tables without its columns) gets them
    on setup: the ledger numbered in load order, a superseded version the number of the version
    that replaced it, raw stream rows the number of their file version, a green build the
    watermark of the loads before it; then loads and builds go on from there."""
    if warehouse_kind == "postgres":
        settings = postgres_settings(settings, request.getfixturevalue("pg_database"))
    with open_warehouse(settings) as wh, wh.transaction() as cur:
        for statement in (
            "create schema raw_streams",
            "create schema raw_meta",
            "create table raw_streams.streams (user_id text, track_id text, listen_time text, "
            "_source_file text, _line_number bigint, _loaded_at timestamp, _load_id text)",
            "create table raw_meta.load_ledger (object_key text not null, etag text not null, "
            "size_bytes bigint, target_table text, row_count bigint, status text not null, "
            "reason text, load_id text, loaded_at timestamp, superseded_at timestamp)",
            "create table raw_meta.dbt_builds "
            "(load_id text, started_at timestamp, finished_at timestamp)",
            "insert into raw_meta.load_ledger values "
            "('streams/a.csv', 'e1', 1, 'raw_streams.streams', 1, 'loaded', null, 'r1', "
            "'2026-01-05 10:00:00', '2026-01-06 10:00:00'), "
            "('streams/b.csv', 'e2', 1, 'raw_streams.streams', 0, 'rejected', 'bad', 'r1', "
            "'2026-01-05 10:00:01', null), "
            "('streams/a.csv', 'e3', 1, 'raw_streams.streams', 1, 'loaded', null, 'r2', "
            "'2026-01-06 10:00:00', null)",
            "insert into raw_streams.streams values "
            "('1', 't1', '2026-01-05 09:00:00', 'streams/a.csv', 2, '2026-01-05 10:00:00', 'r1'), "
            "('2', 't1', '2026-01-05 09:00:00', 'streams/a.csv', 2, '2026-01-06 10:00:00', 'r2')",
            "insert into raw_meta.dbt_builds values "
            "('r1', '2026-01-05 10:00:02', '2026-01-05 10:01:00'), "
            "('r2', '2026-01-06 10:00:02', '2026-01-06 10:01:00')",
        ):
            cur.execute(statement)
    with pipeline.warehouse(settings) as wh:  # setup
        ledger = wh.query(
            "select etag, load_seq, superseded_seq from raw_meta.load_ledger order by load_seq"
        )
        assert ledger == [("e1", 1, 3), ("e2", 2, None), ("e3", 3, None)]
        raw = wh.query("select user_id, _load_seq from raw_streams.streams order by user_id")
        assert raw == [("1", 1), ("2", 3)]
        builds = wh.query("select load_id, load_seq from raw_meta.dbt_builds order by load_id")
        assert builds == [("r1", 2), ("r2", 3)]
        assert wh.ledger_watermark() == 3 and not wh.has_unbuilt_loads()
        assert wh.green_build("r2") and not wh.green_build("r3")
    with pipeline.warehouse(settings) as wh:  # a second setup changes nothing
        assert wh.query("select count(*) from raw_meta.load_ledger where load_seq > 3") == [(0,)]
        wh.record_build("r2", 2, pipeline.utcnow(), pipeline.utcnow())  # one row per run
        assert wh.has_unbuilt_loads()  # e3 (load 3) is above the last green build's watermark
        wh.record_build("r2", 3, pipeline.utcnow(), pipeline.utcnow())
        assert wh.query("select count(*) from raw_meta.dbt_builds") == [(2,)]
        assert not wh.has_unbuilt_loads()


def test_duckdb_reads_each_file_under_a_name_that_is_no_pattern(
    settings: Settings, tmp_path: Path
) -> None:
    """DuckDB's read_csv expands ``*``, ``?``, ``[ab]`` in the paths it gets: it is given a
    link named with digits only, to the one file, with the compression and the 64 MiB line
    limit spelled out (a ``.GZ`` suffix is gzip too)."""
    from loaders.warehouse import DuckDBWarehouse

    landing = LocalLanding(tmp_path / "landing")
    for key in ("streams/[ab].CSV.GZ", "streams/a.CSV.GZ"):
        put(landing, key, gzip.compress(b"user_id,track_id,listen_time\n7,t1,x\n"), tmp_path)
    seen: list[tuple[str, Any]] = []

    class Cursor:
        def execute(self, sql: str, params: Any = None) -> None:
            (paths,) = params
            seen.append((" ".join(sql.split()), [(Path(p).name, Path(p).resolve()) for p in paths]))

    duckdb_wh = DuckDBWarehouse(settings.warehouse)
    (obj,) = [o for o in landing.list("streams/") if o.key == "streams/[ab].CSV.GZ"]
    duckdb_wh._copy_to_temp(Cursor(), landing, [obj], 3)
    ((sql, paths),) = seen
    assert paths == [("00000.csv", landing.local_path("streams/[ab].CSV.GZ"))]
    assert "compression = 'gzip', max_line_size = 67108864)" in sql
