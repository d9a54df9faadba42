"""loaders.serving: a publish makes readers see exactly the audited build, writes only what
changed, switches every relation at once, survives a publish that died, and lets readers and
the pipeline's writer work at the same time."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from unittest import mock

import duckdb
import pytest

from dashboard import kpis
from loaders.config import Settings, WarehouseSettings
from loaders.serving import (
    NoKpiData,
    PublishFailed,
    kpi_marts,
    open_reader,
    publish_marts,
    publish_pending,
    published_relations,
    served_models,
    serving_path,
)
from loaders.warehouse import open_warehouse
from tests.dashboard.conftest import REFUSED_FILE


def _rows(conn: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return sorted(conn.execute(sql).fetchall(), key=repr)


def test_serving_copy_holds_exactly_what_the_audited_build_holds(kpi_settings: Settings) -> None:
    copy = duckdb.connect(str(serving_path(kpi_settings)), read_only=True)
    warehouse = duckdb.connect(str(kpi_settings.warehouse.duckdb_path), read_only=True)
    try:
        relations = published_relations(kpi_marts(kpi_settings), served_models(kpi_settings))
        names = {relation.name for relation in relations}
        assert names == {
            "marts.fct_genre_kpis_daily",
            "marts.fct_listening_kpis_hourly",
            "marts.fct_top_artists_hourly",
            "served.daily_listeners",
            "served.rejected_rows_by_file",
            "marts.landed_files",
            "marts.pipeline_runs",
            "marts.pipeline_freshness",
        }
        for relation in relations:
            if relation.name in ("marts.pipeline_runs", "marts.pipeline_freshness"):
                continue  # copied before the warehouse marks the build published
            assert _rows(copy, f"select * from {relation.name}") == _rows(
                warehouse, relation.query
            ), relation.name
        # dbt builds the KPI marts in kpi_build: the warehouse has no marts.fct_*_kpis_* of
        # its own, so nothing but a publish can show them to readers
        assert not warehouse.execute(
            "select table_name from information_schema.tables "
            "where table_schema = 'marts' and table_name like '%kpis%'"
        ).fetchall()
        # the served aggregates are what the marts say, computed independently here
        assert (
            copy.execute("select sum(rejected_rows) from served.rejected_rows_by_file").fetchone()
            == warehouse.execute("select count(*) from marts.fct_rejected_listens").fetchone()
        )
        daily = dict(
            copy.execute(
                "select listen_date, unique_listeners from served.daily_listeners"
            ).fetchall()
        )
        for day, listeners in warehouse.execute(
            "select listen_date, count(distinct user_id) from marts.fct_listens group by 1"
        ).fetchall():
            assert daily.pop(day) == listeners
        assert daily == {}
        assert (
            copy.execute(
                "select load_status from marts.landed_files where object_key = ?", [REFUSED_FILE]
            ).fetchone()[0]
            == "rejected"
        )
        # every green build is published
        assert warehouse.execute(
            "select count(*) from raw_meta.dbt_builds where published_at is null"
        ).fetchone() == (0,)
    finally:
        copy.close()
        warehouse.close()


@pytest.fixture
def own_copy(kpi_workdir: Path, tmp_path: Path) -> Settings:
    """A private copy of the built and published work directory (these tests write to it)."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("warehouse.duckdb", "serving.duckdb"):
        shutil.copy(kpi_workdir / name, work / name)
    shutil.copytree(kpi_workdir / "dbt" / "target", work / "dbt" / "target")  # its manifest
    return Settings.from_env({}, workdir=work)


def _pending(settings: Settings) -> bool:
    with open_warehouse(settings) as wh:
        return publish_pending(settings, wh)


def _record_build(settings: Settings, run_id: str) -> None:
    """What a green build records (loaders.pipeline.build)."""
    with open_warehouse(settings) as wh:
        wh.record_build(run_id, wh.ledger_watermark(), datetime(2099, 1, 1), datetime(2099, 1, 1))


def test_a_publish_writes_only_what_changed_under_an_open_reader(own_copy: Settings) -> None:
    marts = kpi_marts(own_copy)
    assert not _pending(own_copy)
    sql = "select listen_count from marts.fct_genre_kpis_daily where track_genre = 'unknown'"
    before = sorted(open_reader(own_copy).query(sql))
    # a later build changes one row of one mart and removes another
    with open_warehouse(own_copy) as wh, wh.transaction() as cur:
        cur.execute(
            "update kpi_build.fct_genre_kpis_daily set listen_count = listen_count + 1000 "
            "where track_genre = 'unknown' and listen_date = "
            "(select min(listen_date) from kpi_build.fct_genre_kpis_daily)"
        )
        cur.execute(
            "delete from kpi_build.fct_top_artists_hourly where listen_hour = "
            "(select max(listen_hour) from kpi_build.fct_top_artists_hourly) and artist_rank = 5"
        )
    _record_build(own_copy, "later-build")
    assert _pending(own_copy)
    with open_reader(own_copy).session() as reading:
        outcome = publish_marts(own_copy, marts)  # the open reader neither blocks nor breaks it
        assert sorted(reading.query(sql)) == before  # it keeps reading the copy it opened
    assert outcome.startswith("2 row(s) changed"), outcome  # one key each, nothing else
    after = sorted(open_reader(own_copy).query(sql))
    assert sum(row[0] for row in after) == sum(row[0] for row in before) + 1000
    assert not _pending(own_copy)
    leftovers = [p.name for p in own_copy.workdir.iterdir() if p.name.startswith(".serving")]
    assert leftovers == []
    # publishing the same build again changes nothing
    assert publish_marts(own_copy, marts).startswith("0 row(s) changed")


def test_a_publish_that_died_is_repaired_by_the_next(own_copy: Settings) -> None:
    marts = kpi_marts(own_copy)
    _record_build(own_copy, "died-while-publishing")
    leftover = own_copy.workdir / ".serving.duckdb.4242-deadbeef.tmp"  # what kill -9 leaves
    leftover.write_bytes(b"half a database")
    assert _pending(own_copy)
    full_disk = OSError(errno.ENOSPC, "No space left on device")
    with (
        mock.patch("loaders.serving.os.replace", side_effect=full_disk),
        pytest.raises(PublishFailed, match="No space left on device") as failed,
    ):
        publish_marts(own_copy, marts)
    assert "\n" not in str(failed.value) and "next run publishes it" in str(failed.value)
    assert isinstance(failed.value, ConnectionError)  # an outage: exit 2, never "fix the data"
    assert _pending(own_copy)
    publish_marts(own_copy, marts)
    assert not _pending(own_copy)
    assert not leftover.exists()
    assert [p.name for p in own_copy.workdir.iterdir() if p.name.startswith(".serving")] == []
    # a deleted serving copy is a pending publish too
    serving_path(own_copy).unlink()
    assert _pending(own_copy)


_HOLD_WAREHOUSE = textwrap.dedent(
    """
    import sys, time, duckdb
    conn = duckdb.connect(sys.argv[1])  # a writer, as a pipeline run is
    conn.execute("insert into raw_meta.dbt_builds (load_id) values ('writer')")
    print("holding", flush=True)
    sys.stdin.readline()
    conn.close()
    """
)


def test_readers_and_a_writing_pipeline_do_not_block_each_other(own_copy: Settings) -> None:
    path = own_copy.warehouse.duckdb_path
    writer = subprocess.Popen(
        [sys.executable, "-c", _HOLD_WAREHOUSE, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "holding"
        # the warehouse itself is locked for anyone else ...
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(str(path), read_only=True)
        # ... but the dashboard reads the serving copy
        rows = open_reader(own_copy).query("select count(*) from marts.fct_genre_kpis_daily")
        assert rows[0][0] > 0
    finally:
        writer.communicate("\n", timeout=60)
    assert writer.returncode == 0

    # and while a reader holds the copy open, a pipeline step can write the warehouse
    with open_reader(own_copy).session() as reading:
        _record_build(own_copy, "while-reading")
        assert reading.query("select count(*) from marts.fct_top_artists_hourly")[0][0] > 0


def test_nothing_is_published_before_a_green_build(tmp_path: Path) -> None:
    settings = Settings.from_env({}, workdir=tmp_path / "work")
    with open_warehouse(settings) as wh:
        wh.setup()  # raw schemas and build log, but no dbt build yet
        assert not publish_pending(settings, wh)
    with pytest.raises(NoKpiData):
        open_reader(settings).query("select 1")
    assert sorted(p.name for p in settings.workdir.iterdir()) == ["warehouse.duckdb"]


def test_postgres_and_redshift_readers_read_the_published_relations(tmp_path: Path) -> None:
    for kind in ("postgres", "redshift"):
        warehouse = WarehouseSettings(
            kind=kind, user="reader", dbname="dw", password="s3cret", iam_role="arn:role"
        )
        settings = Settings(workdir=tmp_path, warehouse=warehouse)
        reader = open_reader(settings)
        assert reader.path is None and "s3cret" not in reader.where
        assert reader.relation("served.daily_listeners") == "served.daily_listeners"
        assert reader.relation("marts.fct_genre_kpis_daily") == "marts.fct_genre_kpis_daily"
    with pytest.raises(KeyError):
        reader.relation("marts.fct_listens")  # only served relations can be named


def test_cli_publishes_when_stale_and_says_what_it_did(
    own_copy: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from loaders.serving import main

    work = str(own_copy.workdir)
    assert main(["--workdir", work, "--if-stale"]) == 0
    assert "is published" in capsys.readouterr().out
    _record_build(own_copy, "by-hand")
    assert main(["--workdir", work, "--if-stale"]) == 0
    assert "published for readers" in capsys.readouterr().out
    assert main(["--workdir", str(own_copy.workdir / "nothing-here")]) == 0
    assert "no warehouse" in capsys.readouterr().out


def test_a_copy_of_an_older_format_is_stale_and_published_again(
    own_copy: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A serving copy an older version published lacks a column readers now query
    (landed_files.is_current, read by the dashboard's ledger counts): although every green
    build is published, --if-stale (and a run's plan) find it stale and publish again."""
    from loaders.serving import main

    copy = duckdb.connect(str(serving_path(own_copy)))
    copy.execute("alter table marts.landed_files drop column is_current")
    copy.close()
    with (
        pytest.raises(duckdb.BinderException, match="is_current"),
        open_reader(own_copy).session() as session,
    ):
        kpis.ledger_counts(session)
    assert _pending(own_copy)
    assert main(["--workdir", str(own_copy.workdir), "--if-stale"]) == 0
    assert "published for readers" in capsys.readouterr().out
    assert not _pending(own_copy)
    with open_reader(own_copy).session() as session:
        assert kpis.ledger_counts(session).loaded > 0
