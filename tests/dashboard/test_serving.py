"""loaders.serving: the published copy equals the warehouse, is replaced atomically, and lets
readers and the pipeline's writer work at the same time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from loaders.config import Settings, WarehouseSettings
from loaders.serving import (
    SERVED,
    NoKpiData,
    open_reader,
    publish_serving_copy,
    serving_copy_stale,
    serving_path,
)
from loaders.warehouse import open_warehouse
from tests.dashboard.conftest import REFUSED_FILE


def _rows(conn: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return sorted(conn.execute(sql).fetchall(), key=repr)


def test_serving_copy_holds_exactly_what_the_warehouse_holds(
    kpi_settings: Settings, marts: duckdb.DuckDBPyConnection
) -> None:
    copy = duckdb.connect(str(serving_path(kpi_settings)), read_only=True)
    try:
        for relation in SERVED:
            assert _rows(copy, f"select * from {relation.name}") == _rows(marts, relation.query), (
                relation.name
            )
        # the served aggregates are what the marts say, computed independently here
        assert (
            copy.execute("select sum(rejected_rows) from served.rejected_rows_by_file").fetchone()
            == marts.execute("select count(*) from marts.fct_rejected_listens").fetchone()
        )
        daily = dict(
            copy.execute(
                "select listen_date, unique_listeners from served.daily_listeners"
            ).fetchall()
        )
        for day, listeners in marts.execute(
            "select listen_date, count(distinct user_id) from marts.fct_listens group by 1"
        ).fetchall():
            assert daily.pop(day) == listeners
        assert daily == {}
        # a day's listeners are fewer than the sum over its genres (people play several)
        (day, listeners, genre_sum) = copy.execute(
            "select d.listen_date, d.unique_listeners, sum(g.unique_listeners) "
            "from served.daily_listeners d join marts.fct_genre_kpis_daily g "
            "using (listen_date) group by 1, 2 order by 1 limit 1"
        ).fetchone()
        assert listeners < genre_sum
        (build_finished,) = copy.execute(
            "select build_finished_at from served.published"
        ).fetchone()
        assert (
            build_finished
            == marts.execute("select max(finished_at) from raw_meta.dbt_builds").fetchone()[0]
        )
        assert (
            copy.execute(
                "select status, reason from raw_meta.load_ledger where object_key = ?",
                [REFUSED_FILE],
            ).fetchone()[0]
            == "rejected"
        )
    finally:
        copy.close()


@pytest.fixture
def own_copy(kpi_workdir: Path, tmp_path: Path) -> Settings:
    """A private copy of the built warehouse (these tests write to it)."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(kpi_workdir / "warehouse.duckdb", work / "warehouse.duckdb")
    return Settings.from_env({}, workdir=work)


def _record_build(settings: Settings, finished: datetime) -> None:
    with open_warehouse(settings) as wh:
        wh.record_build(
            "later-build", wh.ledger_watermark(), finished - timedelta(seconds=5), finished
        )


def test_publish_replaces_the_copy_atomically_under_an_open_reader(own_copy: Settings) -> None:
    with pytest.raises(NoKpiData):  # nothing published yet
        open_reader(own_copy).query("select 1")
    assert serving_copy_stale(own_copy)
    first = publish_serving_copy(own_copy)
    assert first == serving_path(own_copy) and not serving_copy_stale(own_copy)
    sql = "select build_finished_at from served.published"
    (published_first,) = open_reader(own_copy).query(sql)[0]

    later = datetime(2099, 1, 1, 12, 0, 0)
    _record_build(own_copy, later)
    assert serving_copy_stale(own_copy)
    with open_reader(own_copy).session() as reading:
        publish_serving_copy(own_copy)  # the open reader neither blocks nor breaks this
        # ... and keeps reading the complete copy it opened
        assert reading.query(sql) == [(published_first,)]
    assert open_reader(own_copy).query(sql) == [(later,)]
    assert not serving_copy_stale(own_copy)
    leftovers = [p.name for p in own_copy.workdir.iterdir() if p.name.startswith(".serving")]
    assert leftovers == []


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
    publish_serving_copy(own_copy)
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
        with open_warehouse(own_copy) as wh:
            started, finished = datetime(2099, 1, 2), datetime(2099, 1, 2, 0, 1)
            wh.record_build("while-reading", wh.ledger_watermark(), started, finished)
        assert reading.query("select count(*) from marts.fct_top_artists_hourly")[0][0] > 0


def test_publish_without_marts_publishes_nothing(tmp_path: Path) -> None:
    settings = Settings.from_env({}, workdir=tmp_path / "work")
    with open_warehouse(settings) as wh:
        wh.setup()  # raw schemas and build log, but no dbt build yet
    with pytest.raises(NoKpiData):
        publish_serving_copy(settings)
    assert sorted(p.name for p in settings.workdir.iterdir()) == ["warehouse.duckdb"]
    assert not serving_copy_stale(settings)  # no green build: nothing to publish


def test_postgres_and_redshift_readers_read_the_warehouse(tmp_path: Path) -> None:
    for kind in ("postgres", "redshift"):
        warehouse = WarehouseSettings(
            kind=kind, user="reader", dbname="dw", password="s3cret", iam_role="arn:role"
        )
        settings = Settings(workdir=tmp_path, warehouse=warehouse)
        assert publish_serving_copy(settings) is None  # MVCC: no copy needed
        reader = open_reader(settings)
        assert reader.path is None and "s3cret" not in reader.where
        inline = reader.relation("served.daily_listeners")
        assert inline.startswith("(select listen_date, count(*)")
        assert inline.endswith(") as daily_listeners")
        assert reader.relation("marts.fct_genre_kpis_daily") == (
            "(select * from marts.fct_genre_kpis_daily) as fct_genre_kpis_daily"
        )
    with pytest.raises(KeyError):
        reader.relation("marts.fct_listens")  # only served relations can be named


def test_cli_publishes_when_stale_and_says_what_it_did(
    own_copy: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from loaders.serving import main

    work = str(own_copy.workdir)
    assert main(["--workdir", work, "--if-stale"]) == 0
    assert "published" in capsys.readouterr().out
    assert main(["--workdir", work, "--if-stale"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["--workdir", str(own_copy.workdir / "nothing-here")]) == 0
    assert "no warehouse" in capsys.readouterr().out
