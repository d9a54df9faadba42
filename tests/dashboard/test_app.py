"""Every dashboard page, run by Streamlit's AppTest against a built warehouse: what the pages
show equals what the marts hold (queried here from the warehouse itself, not the copy)."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO
from tests.dashboard.conftest import LATE_FILE, REFUSED_FILE

APP = str(REPO / "dashboard" / "app.py")
PAGES = (
    "pages/overview.py",
    "pages/genres.py",
    "pages/hours.py",
    "pages/data_quality.py",
    "pages/revisions.py",
    "pages/pipeline.py",
)


def run_page(page: str | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60).run()
    if page is not None:
        app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def metric(app: AppTest, label: str) -> Any:
    found = [m for m in app.metric if m.label == label]
    assert len(found) == 1, [m.label for m in app.metric]
    return found[0]


def one(conn: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    return conn.execute(sql, params or []).fetchone()[0]


def frame(
    conn: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
) -> pd.DataFrame:
    cursor = conn.execute(sql, params or [])
    columns = [d[0] for d in cursor.description]
    return pd.DataFrame.from_records(cursor.fetchall(), columns=columns)


def test_overview_shows_the_latest_day_as_the_marts_hold_it(
    dashboard_env: Path, marts: duckdb.DuckDBPyConnection
) -> None:
    app = run_page()
    latest = one(marts, "select max(listen_date) from marts.fct_genre_kpis_daily")
    before = latest - timedelta(days=1)
    assert any(latest.isoformat() in s.value for s in app.subheader)

    def totals(day: date) -> tuple[int, int, int]:
        plays, genres = marts.execute(
            "select sum(listen_count), count(*) from marts.fct_genre_kpis_daily "
            "where listen_date = ?",
            [day],
        ).fetchone()
        listeners = one(
            marts,
            "select count(distinct user_id) from marts.fct_listens where listen_date = ?",
            [day],
        )
        return int(plays), int(listeners), int(genres)

    now, then = totals(latest), totals(before)
    for label, value, previous in zip(
        ("Plays", "Unique listeners", "Genres played"), now, then, strict=True
    ):
        shown = metric(app, label)
        assert shown.value == f"{value:,}"
        assert shown.delta == (f"{value - previous:+,}" if value != previous else "0")
    # the day's listeners are counted over plays, not summed over genres
    genre_sum = one(
        marts,
        "select sum(unique_listeners) from marts.fct_genre_kpis_daily where listen_date = ?",
        [latest],
    )
    assert now[1] < genre_sum

    expected = frame(
        marts,
        "select track_genre, listen_count, popularity_index, unique_listeners, "
        "coalesce(most_popular_track_name, most_popular_track_id) as track, "
        "most_popular_track_plays from marts.fct_genre_kpis_daily where listen_date = ? "
        "order by listen_count desc, track_genre",
        [latest],
    )
    table = app.table[0].value
    assert table["Rank"].tolist() == list(range(1, len(expected) + 1))
    assert table["Genre"].tolist() == expected["track_genre"].tolist()
    assert table["Plays"].tolist() == [f"{n:,}" for n in expected["listen_count"]]
    assert table["Share of plays"].tolist() == [f"{x:.2%}" for x in expected["popularity_index"]]
    assert table["Listeners"].tolist() == [f"{n:,}" for n in expected["unique_listeners"]]
    assert table["Most played track"].tolist() == expected["track"].tolist()
    assert table["Its plays"].tolist() == [f"{n:,}" for n in expected["most_popular_track_plays"]]
    assert sum(int(p.replace(",", "")) for p in table["Plays"]) == now[0]


def test_genres_page_follows_the_date_range_and_genre_picker(
    dashboard_env: Path, marts: duckdb.DuckDBPyConnection
) -> None:
    app = run_page("pages/genres.py")
    first, last = marts.execute(
        "select min(listen_date), max(listen_date) from marts.fct_genre_kpis_daily"
    ).fetchone()
    assert app.date_input(key="genre_dates").value == (first, last)
    ranked = frame(
        marts,
        "select track_genre from marts.fct_genre_kpis_daily group by 1 "
        "order by sum(listen_count) desc, track_genre",
    )["track_genre"].tolist()
    picker = app.multiselect(key="genre_names")
    assert picker.options == ranked and picker.value == ranked[:5]

    def shown_equals_marts(start: date, end: date, genres: list[str]) -> None:
        marks = ", ".join("?" * len(genres))
        expected = frame(
            marts,
            "select * from marts.fct_genre_kpis_daily where listen_date between ? and ? "
            f"and track_genre in ({marks}) order by listen_date, listen_count desc, track_genre",
            [start, end, *genres],
        )
        shown = app.dataframe[0].value
        columns = [
            "listen_date",
            "track_genre",
            "listen_count",
            "unique_listeners",
            "popularity_index",
            "avg_track_duration_sec",
            "avg_popularity",
            "most_popular_track_id",
            "most_popular_track_name",
            "most_popular_track_plays",
        ]
        pd.testing.assert_frame_equal(
            shown[columns].reset_index(drop=True),
            expected[columns].reset_index(drop=True),
            check_dtype=False,
            rtol=0,
            atol=0,
        )
        assert len(expected) > 0

    shown_equals_marts(first, last, ranked[:5])
    genres = [ranked[-1], "unknown", ranked[2]]
    app.multiselect(key="genre_names").set_value(genres).run()
    app.date_input(key="genre_dates").set_value((first + timedelta(days=1), last)).run()
    assert not app.exception
    shown_equals_marts(first + timedelta(days=1), last, genres)
    tabs = [t.label for t in app.tabs]
    assert tabs == ["Plays", "Share of the day's plays", "Average duration", "Average popularity"]


def test_hours_page_shows_hourly_kpis_and_each_hours_top_five(
    dashboard_env: Path, marts: duckdb.DuckDBPyConnection
) -> None:
    app = run_page("pages/hours.py")
    last = one(marts, "select max(listen_date) from marts.fct_listening_kpis_hourly")
    assert app.date_input(key="hour_dates").value == (last, last)
    top5, hourly = app.dataframe[0].value, app.dataframe[1].value

    expected = frame(
        marts,
        "select * from marts.fct_listening_kpis_hourly where listen_date = ? order by listen_hour",
        [last],
    )
    assert len(expected) == 24
    pd.testing.assert_frame_equal(
        hourly[list(expected.columns)].reset_index(drop=True),
        expected,
        check_dtype=False,
        rtol=0,
        atol=0,
    )
    ranks = frame(
        marts,
        "select listen_hour, artist_rank, artist_name, listen_count "
        "from marts.fct_top_artists_hourly where cast(listen_hour as date) = ?",
        [last],
    )
    assert top5["Hour"].tolist() == [h.strftime("%Y-%m-%d %H:00") for h in expected["listen_hour"]]
    cells = 0
    for row in ranks.itertuples():
        shown = top5.loc[top5["Hour"] == row.listen_hour.strftime("%Y-%m-%d %H:00")]
        assert shown[f"#{row.artist_rank}"].item() == f"{row.artist_name} ({row.listen_count:,})"
        cells += 1
    filled = sum((top5[c] != "").sum() for c in top5.columns if c.startswith("#"))
    assert cells == filled == len(ranks) > 24

    # two days: 48 hours
    app.date_input(key="hour_dates").set_value((last - timedelta(days=1), last)).run()
    assert len(app.dataframe[1].value) == 48


def test_data_quality_page_counts_rejects_and_files_as_the_warehouse_does(
    dashboard_env: Path, marts: duckdb.DuckDBPyConnection
) -> None:
    app = run_page("pages/data_quality.py")
    rejected = one(marts, "select count(*) from marts.fct_rejected_listens")
    assert rejected > 0
    assert metric(app, "Rejected rows").value == f"{rejected:,}"
    loaded = one(
        marts,
        "select count(*) from raw_meta.load_ledger "
        "where status = 'loaded' and target_table = 'raw_streams.streams'",
    )
    assert metric(app, "Files loaded").value == f"{loaded:,}"
    assert metric(app, "Files quarantined").value == "1"
    assert metric(app, "Files superseded").value == "0"
    finished = one(marts, "select max(finished_at) from raw_meta.dbt_builds")
    assert metric(app, "Last green build (UTC)").value == finished.strftime("%Y-%m-%d %H:%M")
    (published,) = (
        duckdb.connect(str(dashboard_env / "serving.duckdb"), read_only=True)
        .execute("select published_at from served.published")
        .fetchone()
    )
    assert metric(app, "Published for the dashboard (UTC)").value == published.strftime(
        "%Y-%m-%d %H:%M"
    )

    by_reason = frame(
        marts,
        "select reject_reason, count(*) as n from marts.fct_rejected_listens "
        "group by 1 order by n desc, reject_reason",
    )
    table = app.table[0].value
    assert list(table.index) == by_reason["reject_reason"].tolist()
    assert table["Rows"].tolist() == [f"{n:,}" for n in by_reason["n"]]

    per_file = app.dataframe[0].value.set_index("file")
    expected = frame(
        marts,
        "select source_file, reject_reason, count(*) as n from marts.fct_rejected_listens "
        "group by 1, 2",
    )
    for row in expected.itertuples():
        assert per_file.loc[row.source_file, row.reject_reason] == row.n
    totals = expected.groupby("source_file")["n"].sum()
    assert per_file["total"].sort_index().tolist() == totals.sort_index().tolist()

    quarantined = app.dataframe[2].value
    assert quarantined["object_key"].tolist() == [REFUSED_FILE]
    assert "listen_time" in quarantined["reason"].item()


def test_revisions_page_shows_the_log_and_filters_it(
    dashboard_env: Path, marts: duckdb.DuckDBPyConnection
) -> None:
    app = run_page("pages/revisions.py")
    log = frame(
        marts,
        "select mart, grain, kpi, old_value, new_value, caused_by from raw_meta.kpi_revisions "
        "order by new_published_at desc, mart, grain, kpi",
    )
    assert len(log) > 0  # the late file revised the first day
    assert metric(app, "Revised values (all)").value == f"{len(log):,}"
    shown = app.dataframe[0].value
    assert (
        shown[["Mart", "Row", "KPI"]].values.tolist()
        == log[["mart", "grain", "kpi"]].values.tolist()
    )
    assert shown["Old"].tolist() == log["old_value"].fillna("—").tolist()
    assert shown["New"].tolist() == log["new_value"].fillna("—").tolist()
    assert set(shown["Caused by"]) == {LATE_FILE}
    # the late file's 24 plays, in the hourly mart: old -> new, +24
    first_hour = one(marts, "select min(listen_date) from marts.fct_genre_kpis_daily")
    plays = shown.loc[
        (shown["Mart"] == "fct_listening_kpis_hourly")
        & (shown["Row"] == f"{first_hour} 03:00:00")
        & (shown["KPI"] == "listen_count")
    ]
    assert plays["Change"].item() == "+24"
    assert int(plays["New"].item()) == one(
        marts,
        "select listen_count from marts.fct_listening_kpis_hourly where listen_hour = ?",
        [f"{first_hour} 03:00:00"],
    )

    app.multiselect(key="revision_marts").set_value(["fct_top_artists_hourly"]).run()
    assert not app.exception
    only = app.dataframe[0].value if app.dataframe else pd.DataFrame({"Mart": []})
    assert set(only["Mart"]) <= {"fct_top_artists_hourly"}
    assert len(only) == (log["mart"] == "fct_top_artists_hourly").sum()

    # a date range without revisions: nothing shown
    last = one(marts, "select max(listen_date) from marts.fct_genre_kpis_daily")
    app.multiselect(key="revision_marts").set_value(list(log["mart"].unique())).run()
    app.date_input(key="revision_dates").set_value((last, last)).run()
    assert [s.value for s in app.success] and not app.dataframe

    # the overview marks the revised day
    overview = run_page()
    assert any(str(first_hour) in c.value and "revised" in c.value for c in overview.caption)


def test_pipeline_page_shows_freshness_and_every_run(
    dashboard_env: Path, marts: duckdb.DuckDBPyConnection
) -> None:
    app = run_page("pages/pipeline.py")
    newest = one(marts, "select max(listen_time) from marts.fct_listens")
    assert metric(app, "Newest play (UTC)").value == newest.strftime("%Y-%m-%d %H:%M")
    finished = one(marts, "select max(finished_at) from raw_meta.dbt_builds")
    assert metric(app, "Last green build (UTC)").value == finished.strftime("%Y-%m-%d %H:%M")
    runs = app.dataframe[0].value
    expected = frame(
        marts,
        "select load_id, count(case when status = 'loaded' and target_table = "
        "'raw_streams.streams' then 1 end) as files, "
        "count(case when status = 'rejected' then 1 end) as quarantined, "
        "sum(case when status = 'loaded' and target_table = 'raw_streams.streams' "
        "then row_count else 0 end) as rows_in "
        "from raw_meta.load_ledger group by load_id",
    ).set_index("load_id")
    assert len(runs) == 2  # the demo's run and the late file's
    for run in runs.itertuples():
        assert run.files_loaded == expected.loc[run.load_id, "files"]
        assert run.files_quarantined == expected.loc[run.load_id, "quarantined"]
        assert run.rows_in == expected.loc[run.load_id, "rows_in"]
        rejected = one(
            marts,
            "select count(*) from marts.fct_rejected_listens where load_id = ?",
            [run.load_id],
        )
        assert (run.rows_rejected, run.rows_kept) == (rejected, run.rows_in - rejected)
        assert (run.build_status, run.publish_status) == ("green", "published")
    late = runs.loc[runs["files_loaded"] == 1].squeeze()
    assert late.rows_in == 24
    assert len(app.get("vega_lite_chart")) == 4  # files, rows, seconds, plays per day


def test_every_page_says_what_to_run_without_kpi_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kpi_workdir: Path
) -> None:
    monkeypatch.setenv("MUSIC_ELT_WORKDIR", str(tmp_path / "empty"))
    for page in PAGES:
        app = run_page(None if page == PAGES[0] else page)
        assert [i.value for i in app.info] and "make demo" in app.info[0].value
        assert not app.metric and not app.dataframe and not app.table

    # built but not yet published (a warehouse built before the pipeline published copies)
    work = tmp_path / "built"
    work.mkdir()
    shutil.copy(kpi_workdir / "warehouse.duckdb", work / "warehouse.duckdb")
    monkeypatch.setenv("MUSIC_ELT_WORKDIR", str(work))
    app = run_page()
    assert "make dashboard" in app.info[0].value and "loaders.serving" in app.info[0].value
