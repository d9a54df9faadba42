"""The dashboard on a PostgreSQL warehouse (pgserver): it reads the published relations in the
warehouse itself and shows what they hold, connected as a reader role that has nothing but
USAGE on the published schemas and SELECT on the published relations (MUSIC_ELT_READER_ROLE,
granted by the publish step and by dbt's grants config)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import pytest

from loaders import pipeline
from loaders.cli import seed
from loaders.config import Settings
from loaders.demo.generate import generate
from loaders.serving import SERVED
from tests.conftest import postgres_settings
from tests.dashboard.test_app import PAGES, metric, run_page

pytestmark = pytest.mark.slow

# roles belong to the server, not one database: a name of this test's own
READER = f"kpi_reader_{uuid.uuid4().hex[:8]}"


def test_every_page_reads_the_postgres_marts(
    pg_database: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, work = tmp_path / "source", tmp_path / "work"
    generate(source, streams=3_000, days=2, seed=5, users=300, songs=200)
    settings = postgres_settings(Settings.from_env({}, workdir=work), pg_database)
    settings = settings.model_copy(
        update={"warehouse": settings.warehouse.model_copy(update={"reader_role": READER})}
    )
    admin = psycopg2.connect(**pg_database)
    admin.autocommit = True
    with admin.cursor() as cur:  # a login role with nothing granted yet
        cur.execute(f"create role {READER} login")
        cur.execute(f"revoke all on schema public from {READER}")
    seed(settings, source)
    pipeline.run(settings, progress=lambda _line: None)
    # a late file for the first day: a second publish, which revises it
    late = tmp_path / "late.csv"
    with admin.cursor() as cur:
        cur.execute("select min(listen_date), min(track_id) from marts.fct_listens")
        day, track = cur.fetchone()
    late.write_text(
        "user_id,track_id,listen_time\n"
        + "".join(f"{n},{track},{day} 04:{n:02d}:00\n" for n in range(1, 11))
    )
    pipeline.landing_store(settings).put("streams/late.csv", late)
    pipeline.run(settings, progress=lambda _line: None)
    assert not (work / "serving.duckdb").exists()  # published in the warehouse itself

    monkeypatch.setenv("MUSIC_ELT_WORKDIR", str(work))
    monkeypatch.setenv("MUSIC_ELT_TARGET", "postgres")
    monkeypatch.setenv("WAREHOUSE_HOST", str(pg_database["host"]))
    monkeypatch.setenv("WAREHOUSE_PORT", str(pg_database["port"]))
    monkeypatch.setenv("WAREHOUSE_USER", READER)
    monkeypatch.setenv("WAREHOUSE_DBNAME", pg_database["dbname"])
    monkeypatch.delenv("MUSIC_ELT_DUCKDB_PATH", raising=False)

    conn = psycopg2.connect(**pg_database)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "select listen_date, track_genre, listen_count, popularity_index "
                "from marts.fct_genre_kpis_daily "
                "where listen_date = (select max(listen_date) from marts.fct_genre_kpis_daily)"
            )
            # most played first; ties by genre name in byte order, as everywhere
            genres = sorted(cur.fetchall(), key=lambda row: (-row[2], row[1].encode()))
            day = genres[0][0]
            cur.execute(
                "select count(*), count(distinct user_id) from marts.fct_listens "
                "where listen_date = %s",
                (day,),
            )
            plays, listeners = cur.fetchone()
            cur.execute("select count(*) from marts.fct_rejected_listens")
            (rejected,) = cur.fetchone()
    finally:
        conn.close()

    app = run_page()
    assert f"postgres warehouse {READER}@" in app.caption[0].value
    assert metric(app, "Plays").value == f"{plays:,}"
    assert metric(app, "Unique listeners").value == f"{listeners:,}"
    assert metric(app, "Genres played").value == f"{len(genres):,}"
    table = app.table[0].value
    assert table["Genre"].tolist() == [genre for _, genre, _, _ in genres]
    assert table["Plays"].tolist() == [f"{n:,}" for _, _, n, _ in genres]
    assert table["Share of plays"].tolist() == [f"{x:.2%}" for _, _, _, x in genres]

    shown = {}
    for page in PAGES[1:]:
        shown[page] = run_page(page)
    assert metric(shown["pages/data_quality.py"], "Rejected rows").value == f"{rejected:,}"
    with admin.cursor() as cur:
        cur.execute("select count(*) from marts.kpi_revisions")
        (revised,) = cur.fetchone()
    assert revised > 0
    assert metric(shown["pages/revisions.py"], "Revised values (all)").value == f"{revised:,}"
    assert len(shown["pages/pipeline.py"].dataframe[0].value) == 2

    # the reader has SELECT on the published relations and nothing else
    reader = psycopg2.connect(**{**pg_database, "user": READER})
    reader.autocommit = True
    try:
        with reader.cursor() as cur:
            for relation in sorted(SERVED - {"served.published"}):
                cur.execute(f"select count(*) from {relation}")
            for internal in (
                "raw_meta.load_ledger",
                "raw_meta.kpi_revisions",
                "raw_streams.streams",
                "kpi_build.fct_genre_kpis_daily",
                "marts.fct_listens",
            ):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(f"select 1 from {internal} limit 1")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("delete from marts.fct_genre_kpis_daily")
    finally:
        reader.close()
        admin.close()
