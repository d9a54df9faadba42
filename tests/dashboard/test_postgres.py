"""The dashboard on a PostgreSQL warehouse (pgserver): it reads the marts directly, through the
same settings as the pipeline, and shows what they hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg2
import pytest

from loaders import pipeline
from loaders.cli import seed
from loaders.config import Settings
from music_elt_demo.generate import generate
from tests.conftest import postgres_settings
from tests.dashboard.test_app import PAGES, metric, run_page

pytestmark = pytest.mark.slow


def test_every_page_reads_the_postgres_marts(
    pg_database: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, work = tmp_path / "source", tmp_path / "work"
    generate(source, streams=3_000, days=2, seed=5, users=300, songs=200)
    settings = postgres_settings(Settings.from_env({}, workdir=work), pg_database)
    seed(settings, source)
    pipeline.run(settings, progress=lambda _line: None)
    assert not (work / "serving.duckdb").exists()  # published in the warehouse itself

    monkeypatch.setenv("MUSIC_ELT_WORKDIR", str(work))
    monkeypatch.setenv("MUSIC_ELT_TARGET", "postgres")
    monkeypatch.setenv("WAREHOUSE_HOST", str(pg_database["host"]))
    monkeypatch.setenv("WAREHOUSE_PORT", str(pg_database["port"]))
    monkeypatch.setenv("WAREHOUSE_USER", pg_database["user"])
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
    assert "postgres warehouse" in app.caption[0].value
    assert metric(app, "Plays").value == f"{plays:,}"
    assert metric(app, "Unique listeners").value == f"{listeners:,}"
    assert metric(app, "Genres played").value == f"{len(genres):,}"
    table = app.table[0].value
    assert table["Genre"].tolist() == [genre for _, genre, _, _ in genres]
    assert table["Plays"].tolist() == [f"{n:,}" for _, _, n, _ in genres]
    assert table["Share of plays"].tolist() == [f"{x:.2%}" for _, _, _, x in genres]

    for page in PAGES[1:]:
        app = run_page(page)
    assert metric(app, "Rejected rows").value == f"{rejected:,}"
