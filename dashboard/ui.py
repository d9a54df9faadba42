"""What every page shares: the settings, one read-only session per page run, number formats."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import streamlit as st

from loaders.config import ConfigError, Settings
from loaders.serving import KpiSession, NoKpiData, open_reader


def settings() -> Settings:
    """The project's settings: ``--workdir`` after ``--`` on the streamlit command line, else
    ``MUSIC_ELT_WORKDIR``; the warehouse from ``MUSIC_ELT_TARGET`` and ``WAREHOUSE_*``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workdir")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return Settings.from_env(workdir=Path(args.workdir) if args.workdir else None)


def what_to_run(s: Settings) -> str:
    """The one thing to do when there is nothing to show yet."""
    work = s.workdir
    if s.warehouse.kind == "duckdb" and s.warehouse.duckdb_path.is_file():
        return (
            f"The warehouse {s.warehouse.duckdb_path} has not been published for readers yet. "
            f"Run `make dashboard WORKDIR={work}` (it publishes the last green build first) or "
            f"`.venv/bin/python -m loaders.serving --workdir {work}`. If nothing was built "
            f"yet: `.venv/bin/music-elt run --workdir {work}`."
        )
    return (
        "No KPI data yet: run `make demo` (or `.venv/bin/music-elt run --workdir "
        f"{work}` on a seeded work directory), then reload this page."
    )


@contextmanager
def kpi_session() -> Iterator[KpiSession]:
    """One read-only session for this page run; stops the page with a message saying what to
    do when there is nothing to read or the warehouse cannot be reached."""
    try:
        s = settings()
    except ConfigError as exc:
        st.error(f"Configuration: {exc}")
        st.stop()
    reader = open_reader(s)
    try:
        with reader.session() as session:
            yield session
    except NoKpiData:
        st.info(what_to_run(s), icon=":material/hourglass_empty:")
        st.stop()
    except ConnectionError as exc:
        st.error(f"Cannot read the KPIs: {exc}")
        st.stop()


def pick_dates(
    session: KpiSession, *, key: str, whole_range: bool
) -> tuple[date, date, date, date]:
    """The mart's first and last day, and the range the reader picked (by default the whole
    range, or the last day alone); stops the page saying what to run when nothing is built."""
    from dashboard import kpis

    bounds = kpis.date_bounds(session)
    if bounds is None:
        st.info(what_to_run(settings()))
        st.stop()
    first, last = bounds
    default = (first, last) if whole_range else (last, last)
    picked = st.date_input("Dates (UTC)", value=default, min_value=first, max_value=last, key=key)
    start, end = (picked[0], picked[-1]) if isinstance(picked, tuple) and picked else default
    return first, last, start, end


def source_caption(session: KpiSession, published: datetime | None) -> None:
    """Where the numbers come from, under a page title."""
    where = session.reader.where
    suffix = f", published {fmt_time(published)}" if published else ""
    st.caption(
        f"Source: {where}{suffix}. All times UTC. Definitions: the KPI contract, on the dbt "
        "docs site (`make docs`)."
    )


# -- formats (round for reading only: the marts are never rounded) ---------------------------------
def fmt_int(value: Any) -> str:
    """1234567 -> '1,234,567'; missing -> '—'."""
    return "—" if _missing(value) else f"{int(value):,}"


def fmt_share(value: Any) -> str:
    """0.12345 -> '12.35%'."""
    return "—" if _missing(value) else f"{float(value):.2%}"


def fmt_delta(value: int) -> str:
    """+1,234 / -56 / 0."""
    return f"{value:+,}" if value else "0"


def fmt_time(value: Any) -> str:
    if _missing(value):
        return "—"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S") + " UTC"
    return str(value)


def fmt_hour(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:00")


def fmt_age(age: timedelta) -> str:
    """A duration for reading: '42 s', '17 min', '5.2 h', '3.1 days'."""
    seconds = age.total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def fmt_date(value: date) -> str:
    return value.isoformat()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # None or NaN
