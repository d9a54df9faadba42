"""Pipeline: how fresh the KPIs are, and every run: files, rows, seconds, build and publish."""

from __future__ import annotations

from datetime import UTC, datetime

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import kpis, ui

st.title("Pipeline")
with ui.kpi_session() as session:
    fresh = kpis.freshness(session)
    runs = kpis.runs(session)
    published = kpis.published_at(session)
    bounds = kpis.date_bounds(session)
    daily = kpis.daily_plays(session)
    ui.source_caption(session, published)

now = datetime.now(UTC).replace(tzinfo=None)
last_publish = published or fresh.last_published_at


def _age(at: datetime | None) -> str | None:
    return f"{ui.fmt_age(now - at)} ago" if at else None


def _minute(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M") if at else "never"


newest, built, served = st.columns(3)
newest.metric(
    "Newest play (UTC)",
    _minute(fresh.newest_listen_time),
    _age(fresh.newest_listen_time),
    delta_color="off",
    help="The latest listen_time in the marts (marts.pipeline_freshness).",
    border=True,
)
built.metric(
    "Last green build (UTC)",
    _minute(fresh.last_green_build_at),
    _age(fresh.last_green_build_at),
    delta_color="off",
    help="When the last dbt build that passed every test finished.",
    border=True,
)
served.metric(
    "Last publish (UTC)",
    _minute(last_publish),
    _age(last_publish),
    delta_color="off",
    help="When readers last got a new green build (this dashboard reads that publish).",
    border=True,
)

if runs.empty:
    st.info("No run has loaded a file yet.")
    st.stop()

runs = runs.assign(run=runs["run_started_at"].map(lambda at: at.strftime("%m-%d %H:%M:%S")))
st.markdown(f"#### {len(runs):,} run(s)")


def _long(columns: dict[str, str]) -> pd.DataFrame:
    return runs.melt(
        id_vars=["run", "load_id"], value_vars=list(columns), var_name="what", value_name="n"
    ).assign(what=lambda frame: frame["what"].map(columns))


def _bars(frame: pd.DataFrame, title: str) -> alt.Chart:
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("run:N", title="run started (UTC)", sort=None),
            y=alt.Y("n:Q", title=title, stack=True),
            color=alt.Color("what:N", title=None),
            tooltip=["load_id:N", "what:N", alt.Tooltip("n:Q", format=",")],
        )
    )


files_chart, rows_chart = st.columns(2)
files_chart.markdown("**Files per run**")
files_chart.altair_chart(
    _bars(
        _long(
            {
                "files_loaded": "loaded",
                "files_quarantined": "quarantined",
                "files_superseded": "superseded",
            }
        ),
        "files",
    ),
    width="stretch",
)
rows_chart.markdown("**Stream rows per run**")
rows_chart.altair_chart(
    _bars(_long({"rows_kept": "kept", "rows_rejected": "rejected"}), "rows"), width="stretch"
)

seconds_chart, volume_chart = st.columns(2)
seconds_chart.markdown("**Seconds per step**")
seconds_chart.altair_chart(
    alt.Chart(
        _long({"load_sec": "load", "build_sec": "dbt build", "build_to_publish_sec": "to publish"})
    )
    .mark_line(point=True)
    .encode(
        x=alt.X("run:N", title="run started (UTC)", sort=None),
        y=alt.Y("n:Q", title="seconds"),
        color=alt.Color("what:N", title=None),
        tooltip=["load_id:N", "what:N", alt.Tooltip("n:Q", title="seconds")],
    ),
    width="stretch",
)
volume_chart.markdown("**Plays per day**")
volume_chart.altair_chart(
    alt.Chart(daily)
    .mark_bar()
    .encode(
        x=alt.X("listen_date:T", title="day (UTC)"),
        y=alt.Y("listen_count:Q", title="plays", axis=alt.Axis(format=",d")),
        tooltip=[alt.Tooltip("listen_date:T"), alt.Tooltip("listen_count:Q", format=",")],
    ),
    width="stretch",
)
volume_chart.caption(
    "The dbt test `warn_daily_plays_below_trailing_median` warns when a day's plays fall below "
    "half the median of the 7 days before it (vars `volume_drop_ratio`, `volume_trailing_days`)."
)

st.markdown("#### Runs")
st.dataframe(
    runs.drop(columns=["run"]).iloc[::-1],
    hide_index=True,
    column_config={
        "load_id": "Run",
        "run_started_at": "Started (UTC)",
        "files_loaded": "Files loaded",
        "snapshots_loaded": "Snapshots",
        "files_quarantined": "Quarantined",
        "files_superseded": "Superseded",
        "rows_in": st.column_config.NumberColumn("Rows in", format="localized"),
        "rows_kept": st.column_config.NumberColumn("Kept", format="localized"),
        "rows_rejected": st.column_config.NumberColumn("Rejected", format="localized"),
        "load_sec": "Load s",
        "build_sec": "Build s",
        "build_to_publish_sec": "To publish s",
        "build_status": "Build",
        "publish_status": "Publish",
    },
)
if bounds is not None:
    st.caption(
        f"The marts hold {ui.fmt_date(bounds[0])} to {ui.fmt_date(bounds[1])}. A run without a "
        "green build (failed or interrupted) shows 'not green'; its files are built by the next."
    )
