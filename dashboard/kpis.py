"""The dashboard's questions, as queries over the served relations (``loaders.serving``).

Every function takes a :class:`loaders.serving.KpiSession` and returns rows straight from
published dbt relations: the KPI marts, the served aggregates (``daily_listeners``,
``rejected_rows_by_file``), the revision log (``kpi_revisions``) and the pipeline's views
(``landed_files``, ``pipeline_runs``, ``pipeline_freshness``). No number is recomputed here,
so what a page shows is what those models hold; pages format for reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd

from loaders.serving import REVISION_COLUMNS, KpiSession

GENRE_KPIS = "marts.fct_genre_kpis_daily"
HOURLY_KPIS = "marts.fct_listening_kpis_hourly"
TOP_ARTISTS = "marts.fct_top_artists_hourly"
DAILY_LISTENERS = "served.daily_listeners"
REJECTS_BY_FILE = "served.rejected_rows_by_file"
REVISIONS = "marts.kpi_revisions"
LANDED_FILES = "marts.landed_files"
RUNS = "marts.pipeline_runs"
FRESHNESS = "marts.pipeline_freshness"

GENRE_COLUMNS = (
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
)
HOURLY_COLUMNS = (
    "listen_hour",
    "listen_date",
    "hour_of_day",
    "listen_count",
    "unique_listeners",
    "distinct_tracks",
    "track_diversity_index",
    "top_artist",
    "top_artist_plays",
)


def _frame(session: KpiSession, sql: str, params: tuple[Any, ...] = ()) -> pd.DataFrame:
    columns, rows = session.query_with_columns(sql, params)
    return pd.DataFrame.from_records(rows, columns=columns)


# -- dates ---------------------------------------------------------------------------------------
def date_bounds(session: KpiSession) -> tuple[date, date] | None:
    """First and last ``listen_date`` in the genre mart; None when it is empty."""
    first, last = session.query(
        f"select min(listen_date), max(listen_date) from {session.relation(GENRE_KPIS)}"
    )[0]
    return None if first is None else (_as_date(first), _as_date(last))


def _as_date(value: Any) -> date:
    return value.date() if isinstance(value, datetime) else value


# -- overview ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DayTotals:
    """One day's headline numbers: plays and genres from the genre mart, listeners counted
    distinct over the day's plays (not the sum of the genres' listeners)."""

    day: date
    plays: int
    listeners: int
    genres: int


def day_totals(session: KpiSession, day: date) -> DayTotals | None:
    """Totals of ``day``; None when the marts have no plays that day."""
    plays, genres = session.query(
        f"select sum(listen_count), count(*) from {session.relation(GENRE_KPIS)} "
        "where listen_date = %s",
        (day,),
    )[0]
    if not genres:
        return None
    listeners = session.query(
        f"select unique_listeners from {session.relation(DAILY_LISTENERS)} where listen_date = %s",
        (day,),
    )
    return DayTotals(
        day=day,
        plays=int(plays),
        listeners=int(listeners[0][0]) if listeners else 0,
        genres=int(genres),
    )


def previous_day(day: date) -> date:
    return day - timedelta(days=1)


def genres_of_day(session: KpiSession, day: date) -> pd.DataFrame:
    """The day's genre rows, most played first (ties: genre name, bytes)."""
    return _by_plays(
        _frame(
            session,
            f"select {', '.join(GENRE_COLUMNS)} from {session.relation(GENRE_KPIS)} "
            "where listen_date = %s",
            (day,),
        )
    )


def _bytes(text: Any) -> bytes:
    return str(text).encode()


def _by_plays(rows: pd.DataFrame, *first: str) -> pd.DataFrame:
    """Rows sorted by ``first`` columns, then most plays, then genre name compared as bytes
    (the contract's text order, whatever the warehouse's collation)."""
    keys = [*first, "listen_count", "track_genre"]
    ordered = rows.sort_values(
        keys,
        ascending=[True] * len(first) + [False, True],
        key=lambda column: column.map(_bytes) if column.name == "track_genre" else column,
        kind="stable",
    )
    return ordered.reset_index(drop=True)


# -- genres over time ----------------------------------------------------------------------------
def genre_names(session: KpiSession, start: date, end: date) -> list[str]:
    """Genres with plays between ``start`` and ``end``, most played over the range first."""
    rows = session.query(
        f"select track_genre, sum(listen_count) from {session.relation(GENRE_KPIS)} "
        "where listen_date between %s and %s group by track_genre",
        (start, end),
    )
    return [genre for genre, _ in sorted(rows, key=lambda row: (-row[1], _bytes(row[0])))]


def genre_days(session: KpiSession, start: date, end: date, genres: list[str]) -> pd.DataFrame:
    """Genre rows of the chosen genres between ``start`` and ``end``, by day then plays."""
    if not genres:
        return pd.DataFrame(columns=list(GENRE_COLUMNS))
    marks = ", ".join(["%s"] * len(genres))
    rows = _frame(
        session,
        f"select {', '.join(GENRE_COLUMNS)} from {session.relation(GENRE_KPIS)} "
        f"where listen_date between %s and %s and track_genre in ({marks})",
        (start, end, *genres),
    )
    return _by_plays(rows, "listen_date")


# -- hours ---------------------------------------------------------------------------------------
def hours(session: KpiSession, start: date, end: date) -> pd.DataFrame:
    """Hourly KPI rows between ``start`` and ``end`` (UTC dates), in time order."""
    return _frame(
        session,
        f"select {', '.join(HOURLY_COLUMNS)} from {session.relation(HOURLY_KPIS)} "
        "where listen_date between %s and %s order by listen_hour",
        (start, end),
    )


def top_artists(session: KpiSession, start: date, end: date) -> pd.DataFrame:
    """The top-5 artist rows of every hour between ``start`` and ``end`` (UTC dates)."""
    return _frame(
        session,
        "select listen_hour, artist_rank, artist_name, listen_count "
        f"from {session.relation(TOP_ARTISTS)} "
        "where listen_hour >= %s and listen_hour < %s order by listen_hour, artist_rank",
        (_midnight(start), _midnight(end + timedelta(days=1))),
    )


def daily_plays(session: KpiSession) -> pd.DataFrame:
    """Plays and listeners per day (``daily_listeners``), in date order."""
    return _frame(
        session,
        "select listen_date, listen_count, unique_listeners "
        f"from {session.relation(DAILY_LISTENERS)} order by listen_date",
    )


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


# -- data quality --------------------------------------------------------------------------------
def rejects_by_file(session: KpiSession) -> pd.DataFrame:
    """Rejected stream rows per file and reason (from ``marts.fct_rejected_listens``)."""
    return _frame(
        session,
        "select source_file, reject_reason, rejected_rows, loaded_at "
        f"from {session.relation(REJECTS_BY_FILE)} order by source_file, reject_reason",
    )


def rejects_by_reason(session: KpiSession) -> pd.DataFrame:
    """Rejected stream rows per reason, most frequent first."""
    return _frame(
        session,
        "select reject_reason, sum(rejected_rows) as rejected_rows "
        f"from {session.relation(REJECTS_BY_FILE)} group by reject_reason "
        "order by sum(rejected_rows) desc, reject_reason",
    )


@dataclass(frozen=True)
class LedgerCounts:
    """Stream files by what happened to them, from ``landed_files`` (the load ledger)."""

    loaded: int  # the current version of its key (landed_files.is_current)
    quarantined: int  # refused whole: status 'rejected'
    superseded: int  # loaded, then replaced by a later version of the same key


def ledger_counts(session: KpiSession) -> LedgerCounts:
    loaded, quarantined, replaced = session.query(
        "select coalesce(sum(case when is_current then 1 else 0 end), 0), "
        "coalesce(sum(case when load_status = 'rejected' then 1 else 0 end), 0), "
        "coalesce(sum(case when is_superseded then 1 else 0 end), 0) "
        f"from {session.relation(LANDED_FILES)} where is_stream_file",
    )[0]
    return LedgerCounts(int(loaded), int(quarantined), int(replaced))


def quarantined_files(session: KpiSession) -> pd.DataFrame:
    """Objects the loader refused whole, with the reason, latest first."""
    return _frame(
        session,
        "select object_key, reject_reason as reason, size_bytes, loaded_at, load_id "
        f"from {session.relation(LANDED_FILES)} where load_status = 'rejected' "
        "order by loaded_at desc, object_key",
    )


def superseded_files(session: KpiSession) -> pd.DataFrame:
    """Object versions replaced by a later version of the same key."""
    return _frame(
        session,
        "select object_key, etag, row_count, loaded_at, load_id "
        f"from {session.relation(LANDED_FILES)} where is_superseded "
        "order by object_key, loaded_at",
    )


def ledger_summary(session: KpiSession) -> pd.DataFrame:
    """Landed objects and their rows by target table and status."""
    return _frame(
        session,
        "select target_table, load_status as status, count(*) as objects, "
        f"sum(row_count) as row_count from {session.relation(LANDED_FILES)} "
        "group by target_table, load_status order by target_table, load_status",
    )


def last_green_build(session: KpiSession) -> tuple[datetime, datetime, str] | None:
    """(started_at, finished_at, load_id) of the latest green dbt build, UTC; None if none."""
    rows = session.query(
        "select build_started_at, build_finished_at, load_id "
        f"from {session.relation(RUNS)} where build_status = 'green' "
        "order by build_finished_at desc limit 1"
    )
    return (rows[0][0], rows[0][1], rows[0][2]) if rows else None


def published_at(session: KpiSession) -> datetime | None:
    """When the DuckDB serving copy was published (None when reading a warehouse directly)."""
    if session.reader.path is None:
        return None
    rows = session.query(f"select published_at from {session.relation('served.published')}")
    return rows[0][0] if rows else None


# -- revisions -----------------------------------------------------------------------------------
def revisions(
    session: KpiSession,
    marts: list[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    limit: int = 500,
) -> pd.DataFrame:
    """The latest revisions (newest publish first), optionally of some marts only and of values
    whose period (the grain's date) lies between ``start`` and ``end``."""
    where, params = ["1 = 1"], []
    if marts:
        where.append(f"mart in ({', '.join(['%s'] * len(marts))})")
        params += marts
    if start is not None and end is not None:
        # the grain starts with YYYY-MM-DD: text comparison orders dates
        where.append("substring(grain, 1, 10) between %s and %s")
        params += [start.isoformat(), end.isoformat()]
    return _frame(
        session,
        f"select {', '.join(REVISION_COLUMNS)} from {session.relation(REVISIONS)} "
        f"where {' and '.join(where)} order by new_published_at desc, mart, grain, kpi "
        f"limit {int(limit)}",
        tuple(params),
    )


def revised_days(session: KpiSession) -> dict[date, datetime]:
    """Days with a value revised after its first publish, with the latest revision's time."""
    rows = session.query(
        "select substring(grain, 1, 10), max(new_published_at) "
        f"from {session.relation(REVISIONS)} group by substring(grain, 1, 10)"
    )
    return {date.fromisoformat(day): at for day, at in rows}


def revision_count(session: KpiSession) -> int:
    (count,) = session.query(f"select count(*) from {session.relation(REVISIONS)}")[0]
    return int(count)


# -- pipeline health -----------------------------------------------------------------------------
RUN_COLUMNS = (
    "load_id",
    "run_started_at",
    "files_loaded",
    "snapshots_loaded",
    "files_quarantined",
    "files_superseded",
    "rows_in",
    "rows_kept",
    "rows_rejected",
    "load_sec",
    "build_sec",
    "build_to_publish_sec",
    "build_status",
    "publish_status",
)


def runs(session: KpiSession) -> pd.DataFrame:
    """Every pipeline run (``pipeline_runs``), oldest first. On DuckDB the serving copy is
    written just before the warehouse marks its build published, so the build it publishes
    reads 'pending' there: shown as 'published', which it is for whoever reads this copy."""
    frame = _frame(
        session,
        f"select {', '.join(RUN_COLUMNS)}, build_finished_at from {session.relation(RUNS)} "
        "order by run_started_at, load_id",
    )
    if session.reader.path is not None and not frame.empty:
        (built,) = session.query(
            f"select build_finished_at from {session.relation('served.published')}"
        )[0]
        served = (frame["publish_status"] == "pending") & (frame["build_finished_at"] <= built)
        frame.loc[served, "publish_status"] = "published"
    return frame.drop(columns=["build_finished_at"])


@dataclass(frozen=True)
class Freshness:
    """The newest play, file, green build and publish (``pipeline_freshness``), UTC."""

    newest_listen_time: datetime | None
    newest_loaded_at: datetime | None
    last_green_build_at: datetime | None
    last_published_at: datetime | None


def freshness(session: KpiSession) -> Freshness:
    rows = session.query(
        "select newest_listen_time, newest_loaded_at, last_green_build_at, last_published_at "
        f"from {session.relation(FRESHNESS)}"
    )
    return Freshness(*rows[0]) if rows else Freshness(None, None, None, None)
