"""Data quality: rejected rows, files loaded / quarantined / superseded, the last green build."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboard import kpis, ui

st.title("Data quality")
with ui.kpi_session() as session:
    by_reason = kpis.rejects_by_reason(session)
    by_file = kpis.rejects_by_file(session)
    files = kpis.ledger_counts(session)
    quarantined = kpis.quarantined_files(session)
    superseded = kpis.superseded_files(session)
    ledger = kpis.ledger_summary(session)
    build = kpis.last_green_build(session)
    published = kpis.published_at(session)
    ui.source_caption(session, published)

rejected_rows, loaded, refused, replaced = st.columns(4)
rejected_rows.metric(
    "Rejected rows",
    ui.fmt_int(int(by_reason["rejected_rows"].sum())),
    help="Stream rows not counted as plays (marts.fct_rejected_listens).",
    border=True,
)
loaded.metric(
    "Files loaded",
    ui.fmt_int(files.loaded),
    help="Stream files in the load ledger whose current version is loaded.",
    border=True,
)
refused.metric(
    "Files quarantined",
    ui.fmt_int(files.quarantined),
    help="Files the loader refused whole (ledger status 'rejected'), moved to quarantine/.",
    border=True,
)
replaced.metric(
    "Files superseded",
    ui.fmt_int(files.superseded),
    help="Earlier versions of a re-delivered file whose content changed: the latest version "
    "counts, earlier ones stay in raw for audit.",
    border=True,
)
built, served, _ = st.columns(3)
built.metric(
    "Last green build (UTC)",
    build[1].strftime("%Y-%m-%d %H:%M") if build else "never",
    help="When the last dbt build that passed every test finished (raw_meta.dbt_builds).",
    border=True,
)
if published:
    served.metric(
        "Published for the dashboard (UTC)",
        published.strftime("%Y-%m-%d %H:%M"),
        help="When the pipeline last copied the marts into the DuckDB serving copy read here.",
        border=True,
    )

st.markdown("#### Rejected rows by reason")
if by_reason.empty:
    st.success("No stream row was rejected.")
else:
    reasons, chart = st.columns([2, 3])
    reasons.table(
        by_reason.assign(rejected_rows=by_reason["rejected_rows"].map(ui.fmt_int))
        .rename(columns={"reject_reason": "Reason", "rejected_rows": "Rows"})
        .set_index("Reason")
    )
    chart.altair_chart(
        alt.Chart(by_reason)
        .mark_bar()
        .encode(
            x=alt.X("rejected_rows:Q", title="rows", axis=alt.Axis(format=",d")),
            y=alt.Y("reject_reason:N", title=None, sort="-x"),
            tooltip=[
                alt.Tooltip("reject_reason:N", title="reason"),
                alt.Tooltip("rejected_rows:Q", title="rows", format=","),
            ],
        ),
        width="stretch",
    )
    st.caption(
        "missing_user_id, missing_track_id: empty after trimming; invalid_user_id: not a "
        "64-bit integer; invalid_listen_time: not a real UTC time in an accepted form; "
        "future_listen_time: more than a day after the file was loaded."
    )

    st.markdown("#### Rejected rows by file")
    per_file = by_file.pivot_table(
        index="source_file",
        columns="reject_reason",
        values="rejected_rows",
        aggfunc="sum",
        fill_value=0,
    )
    per_file.insert(0, "total", per_file.sum(axis=1))
    per_file = per_file.sort_values(["total"], ascending=False, kind="stable")
    st.dataframe(
        per_file.reset_index().rename(columns={"source_file": "file"}),
        hide_index=True,
        column_config={"file": st.column_config.TextColumn("File", width=320)},
    )

st.markdown("#### Load ledger")
ledger_view, files_view = st.columns([2, 3])
ledger_view.dataframe(
    ledger,
    hide_index=True,
    column_config={
        "target_table": "Target table",
        "status": "Status",
        "objects": st.column_config.NumberColumn("Objects", format="localized"),
        "row_count": st.column_config.NumberColumn("Rows", format="localized"),
    },
)
with files_view:
    st.markdown("**Quarantined files**")
    if quarantined.empty:
        st.success("No file was refused.")
    else:
        st.dataframe(quarantined, hide_index=True)
    st.markdown("**Superseded versions**")
    if superseded.empty:
        st.write("No re-delivered file replaced an earlier version.")
    else:
        st.dataframe(superseded, hide_index=True)

if build:
    st.caption(
        f"Last green build: run {build[2]}, started {ui.fmt_time(build[0])}, finished "
        f"{ui.fmt_time(build[1])}."
    )
