"""Revisions: published KPI values that a later publish changed (late files, corrections, new
songs snapshots), old → new, with the files that caused each change."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from dashboard import kpis, ui

MARTS = {
    "fct_genre_kpis_daily": "Genres per day",
    "fct_listening_kpis_hourly": "Hours",
    "fct_top_artists_hourly": "Top artists per hour",
}

st.title("Revisions")
with ui.kpi_session() as session:
    total = kpis.revision_count(session)
    _, _, start, end = ui.pick_dates(session, key="revision_dates", whole_range=True)
    chosen = st.multiselect(
        "Marts",
        options=list(MARTS),
        default=list(MARTS),
        format_func=lambda mart: f"{MARTS[mart]} ({mart})",
        key="revision_marts",
    )
    shown = kpis.revisions(session, chosen, start, end)
    ui.source_caption(session, kpis.published_at(session))

st.caption(
    "A revision is a KPI value readers had already seen that a later publish changed: late "
    "files for old days and hours, corrected files, renamed tracks in a new songs snapshot. A "
    "day or hour published for the first time, or a publish that changes nothing, adds none. "
    "Ratios count as changed beyond a relative difference of 1e-9."
)
revised, values = st.columns(2)
revised.metric(
    "Revised values (all)", ui.fmt_int(total), help="Rows in marts.kpi_revisions.", border=True
)
values.metric(
    "Shown", ui.fmt_int(len(shown)), help="Revisions of the chosen marts and dates.", border=True
)

if shown.empty:
    st.success("No published value was revised in the chosen marts and dates.")
    st.stop()


def _change(row: pd.Series) -> str:
    """new - old for numbers; 'added' / 'removed' for rows; blank for text."""
    old, new = row["old_value"], row["new_value"]
    if old is None or (isinstance(old, float) and old != old):
        return "added"
    if new is None or (isinstance(new, float) and new != new):
        return "removed"
    try:
        delta = float(new) - float(old)
    except ValueError:
        return ""
    whole = float(old).is_integer() and float(new).is_integer()
    return f"{delta:+,.0f}" if whole else f"{delta:+.4g}"


def _files(caused_by: str) -> str:
    return ", ".join(json.loads(caused_by)) if caused_by else ""


table = pd.DataFrame(
    {
        "Published": shown["new_published_at"].map(ui.fmt_time),
        "Mart": shown["mart"],
        "Row": shown["grain"],
        "KPI": shown["kpi"],
        "Old": shown["old_value"].fillna("—"),
        "New": shown["new_value"].fillna("—"),
        "Change": shown.apply(_change, axis=1),
        "Old value published": shown["old_published_at"].map(ui.fmt_time),
        "Caused by": shown["caused_by"].map(_files),
    }
)
st.markdown(f"#### The latest {len(table):,} revision(s), newest publish first")
st.dataframe(
    table,
    hide_index=True,
    column_config={"Caused by": st.column_config.TextColumn("Caused by", width=360)},
)
st.caption(
    "Row: the row's key (`YYYY-MM-DD|genre`, `YYYY-MM-DD HH:00:00`, `YYYY-MM-DD HH:00:00|rank`). "
    "Old is empty for a row added to a day or hour already published, New for a row removed "
    "from one. Caused by: the file versions loaded or superseded since the previous publish."
)
