"""Hours: listeners and track diversity per UTC hour, and the top-5 artists of each hour."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import kpis, ui

st.title("Hours")
with ui.kpi_session() as session:
    _, _, start, end = ui.pick_dates(session, key="hour_dates", whole_range=False)
    hourly = kpis.hours(session, start, end)
    ranked = kpis.top_artists(session, start, end)
    ui.source_caption(session, kpis.published_at(session))

if hourly.empty:
    st.info("No plays in the chosen dates.")
    st.stop()

chart_data = hourly.assign(listen_hour=pd.to_datetime(hourly["listen_hour"]))
hour_axis = alt.X("listen_hour:T", title=None, axis=alt.Axis(format="%m-%d %H:00"))
hour_tip = alt.Tooltip("listen_hour:T", title="hour", format="%Y-%m-%d %H:00")
listeners, diversity = st.columns(2)
listeners.markdown("#### Unique listeners per hour")
listeners.altair_chart(
    alt.Chart(chart_data)
    .mark_bar()
    .encode(
        x=hour_axis,
        y=alt.Y("unique_listeners:Q", title="listeners", axis=alt.Axis(format=",d")),
        tooltip=[
            hour_tip,
            alt.Tooltip("unique_listeners:Q", title="listeners", format=","),
            alt.Tooltip("listen_count:Q", title="plays", format=","),
        ],
    ),
    width="stretch",
)
diversity.markdown("#### Track diversity per hour")
diversity.altair_chart(
    alt.Chart(chart_data)
    .mark_line(point=True)
    .encode(
        x=hour_axis,
        y=alt.Y(
            "track_diversity_index:Q",
            title="distinct tracks / plays",
            scale=alt.Scale(domain=[0, 1]),
        ),
        tooltip=[
            hour_tip,
            alt.Tooltip("track_diversity_index:Q", title="diversity", format=".3f"),
            alt.Tooltip("distinct_tracks:Q", title="distinct tracks", format=","),
        ],
    ),
    width="stretch",
)

st.markdown("#### Top 5 artists of each hour")
ranks = sorted(ranked["artist_rank"].unique().tolist()) if not ranked.empty else []
top5 = pd.DataFrame({"Hour": [ui.fmt_hour(hour) for hour in pd.to_datetime(hourly["listen_hour"])]})
for rank in ranks:
    of_rank = ranked[ranked["artist_rank"] == rank]
    label = {
        ui.fmt_hour(hour): f"{name} ({ui.fmt_int(plays)})"
        for hour, name, plays in zip(
            pd.to_datetime(of_rank["listen_hour"]),
            of_rank["artist_name"],
            of_rank["listen_count"],
            strict=True,
        )
    }
    top5[f"#{rank}"] = top5["Hour"].map(label).fillna("")
st.dataframe(top5, hide_index=True)
st.caption(
    "Artist (plays in the hour). Every credited artist of a track gets its play; tracks not in "
    "the songs table have no artist. Ties go to the smaller name, compared byte by byte."
)

st.markdown("#### Hour by hour")
st.dataframe(
    hourly,
    hide_index=True,
    column_order=[
        "listen_hour",
        "listen_count",
        "unique_listeners",
        "distinct_tracks",
        "track_diversity_index",
        "top_artist",
        "top_artist_plays",
    ],
    column_config={
        "listen_hour": st.column_config.DatetimeColumn("Hour (UTC)", format="YYYY-MM-DD HH:00"),
        "listen_count": st.column_config.NumberColumn("Plays", format="localized"),
        "unique_listeners": st.column_config.NumberColumn("Listeners", format="localized"),
        "distinct_tracks": st.column_config.NumberColumn("Distinct tracks", format="localized"),
        "track_diversity_index": st.column_config.NumberColumn("Diversity", format="%.3f"),
        "top_artist": "Top artist",
        "top_artist_plays": st.column_config.NumberColumn("Its plays", format="localized"),
    },
)
