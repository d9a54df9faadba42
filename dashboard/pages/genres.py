"""Genres over time: a date range and a genre picker; plays, share and averages per day."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import kpis, ui

DEFAULT_GENRES = 5

st.title("Genres over time")
with ui.kpi_session() as session:
    first, last, start, end = ui.pick_dates(session, key="genre_dates", whole_range=True)
    # the same choices whatever the dates, so a picked genre never disappears from the list
    names = kpis.genre_names(session, first, last)
    genres = st.multiselect(
        "Genres (most played first)",
        names,
        default=names[:DEFAULT_GENRES],
        key="genre_names",
    )
    rows = kpis.genre_days(session, start, end, genres)
    ui.source_caption(session, kpis.published_at(session))

if rows.empty:
    st.info("Pick at least one genre with plays in the chosen dates.")
    st.stop()

chart_data = rows.assign(listen_date=pd.to_datetime(rows["listen_date"]))
date_axis = alt.X(
    "listen_date:T",
    title=None,
    axis=alt.Axis(format="%Y-%m-%d", tickCount=alt.TickCount(interval="day", step=1)),
)
legend = alt.Color("track_genre:N", title="genre")


def line(field: str, title: str, fmt: str) -> alt.Chart:
    return (
        alt.Chart(chart_data)
        .mark_line(point=True)
        .encode(
            x=date_axis,
            y=alt.Y(f"{field}:Q", title=title, axis=alt.Axis(format=fmt)),
            color=legend,
            tooltip=[
                alt.Tooltip("listen_date:T", title="date", format="%Y-%m-%d"),
                alt.Tooltip("track_genre:N", title="genre"),
                alt.Tooltip(f"{field}:Q", title=title, format=fmt),
            ],
        )
    )


plays, share, duration, popularity = st.tabs(
    ["Plays", "Share of the day's plays", "Average duration", "Average popularity"]
)
plays.altair_chart(line("listen_count", "plays", ",d"), width="stretch")
share.altair_chart(line("popularity_index", "share of plays", ".1%"), width="stretch")
duration.altair_chart(
    line("avg_track_duration_sec", "seconds per play (play-weighted)", ",.1f"), width="stretch"
)
popularity.altair_chart(
    line("avg_popularity", "popularity per play (play-weighted)", ",.1f"), width="stretch"
)

st.markdown("#### Day by genre")
st.dataframe(
    rows,
    hide_index=True,
    column_order=[
        "listen_date",
        "track_genre",
        "listen_count",
        "popularity_index",
        "unique_listeners",
        "avg_track_duration_sec",
        "avg_popularity",
        "most_popular_track_name",
        "most_popular_track_plays",
    ],
    column_config={
        "listen_date": st.column_config.DateColumn("Date", format="YYYY-MM-DD"),
        "track_genre": "Genre",
        "listen_count": st.column_config.NumberColumn("Plays", format="localized"),
        "popularity_index": st.column_config.NumberColumn("Share of plays", format="percent"),
        "unique_listeners": st.column_config.NumberColumn("Listeners", format="localized"),
        "avg_track_duration_sec": st.column_config.NumberColumn(
            "Avg duration (s)", format="%.1f", help="Mean of duration over the plays"
        ),
        "avg_popularity": st.column_config.NumberColumn(
            "Avg popularity", format="%.1f", help="Mean track popularity over the plays (0-100)"
        ),
        "most_popular_track_name": "Most played track",
        "most_popular_track_plays": st.column_config.NumberColumn("Its plays", format="localized"),
    },
)
st.caption(
    "Averages are play-weighted (a track played three times counts three times) and empty for "
    "`unknown`. Shares are of each day's plays, so they compare genres within a day."
)
