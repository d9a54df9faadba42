"""Overview: the latest day's genres ranked by plays, and the day against the day before."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import kpis, ui

TOP_IN_CHART = 15

st.title("Overview")
with ui.kpi_session() as session:
    bounds = kpis.date_bounds(session)
    if bounds is None:
        st.info(ui.what_to_run(ui.settings()))
        st.stop()
    day = bounds[1]
    today = kpis.day_totals(session, day)
    before = kpis.day_totals(session, kpis.previous_day(day))
    genres = kpis.genres_of_day(session, day)
    revised = kpis.revised_days(session)
    ui.source_caption(session, kpis.published_at(session))

assert today is not None  # the latest day has genre rows by definition
st.subheader(f"{ui.fmt_date(day)}, the latest day in the marts")
if day in revised:
    st.warning(
        f"Revised after its first publish (latest revision published {ui.fmt_time(revised[day])}"
        "): late or corrected files changed numbers already shown. See the Revisions page.",
        icon=":material/history:",
    )
earlier = sorted((d for d in revised if d != day), reverse=True)
if earlier:
    st.caption(
        ":material/history: Days revised after their first publish: "
        + ", ".join(f"{ui.fmt_date(d)} (last {ui.fmt_time(revised[d])})" for d in earlier[:7])
        + (f" and {len(earlier) - 7} more" if len(earlier) > 7 else "")
        + ". See the Revisions page."
    )
against = (
    f"vs {ui.fmt_date(before.day)}" if before else "no plays the day before: nothing to compare"
)
HEADLINES = (
    ("plays", "Plays", "Kept plays that day (duplicates counted once; unknown tracks included)."),
    (
        "listeners",
        "Unique listeners",
        "Distinct users who played anything that day (not the sum over genres: "
        "one listener plays several genres).",
    ),
    (
        "genres",
        "Genres played",
        "Genres with at least one play that day, `unknown` (tracks not in songs) included.",
    ),
)
for column, (field, label, meaning) in zip(st.columns(len(HEADLINES)), HEADLINES, strict=True):
    value = getattr(today, field)
    column.metric(
        label,
        ui.fmt_int(value),
        ui.fmt_delta(value - getattr(before, field)) if before else None,
        delta_description=against,
        help=meaning,
        border=True,
    )

st.markdown(f"#### Top {min(TOP_IN_CHART, len(genres))} genres by plays")
chart_data = genres.head(TOP_IN_CHART).assign(
    share=lambda frame: frame["popularity_index"].map(ui.fmt_share)
)
st.altair_chart(
    alt.Chart(chart_data)
    .mark_bar()
    .encode(
        x=alt.X("listen_count:Q", title="plays", axis=alt.Axis(format=",d")),
        y=alt.Y("track_genre:N", title=None, sort=None),
        tooltip=[
            alt.Tooltip("track_genre:N", title="genre"),
            alt.Tooltip("listen_count:Q", title="plays", format=","),
            alt.Tooltip("share:N", title="share of the day's plays"),
        ],
    ),
    width="stretch",
)

st.markdown("#### All genres that day")
table = pd.DataFrame(
    {
        "Rank": range(1, len(genres) + 1),
        "Genre": genres["track_genre"],
        "Plays": genres["listen_count"].map(ui.fmt_int),
        "Share of plays": genres["popularity_index"].map(ui.fmt_share),
        "Listeners": genres["unique_listeners"].map(ui.fmt_int),
        "Most played track": genres["most_popular_track_name"].where(
            genres["most_popular_track_name"].notna(), genres["most_popular_track_id"]
        ),
        "Its plays": genres["most_popular_track_plays"].map(ui.fmt_int),
    }
)
st.table(table, hide_index=True)
st.caption(
    "Share of plays is `popularity_index`: the genre's plays over all plays that day (the "
    "genres of a day add up to 100%). `unknown` holds plays of tracks not in the songs table; "
    "its most played track shows the track id."
)
