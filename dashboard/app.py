"""music-elt KPI dashboard: ``make dashboard [WORKDIR=W]`` serves it on http://127.0.0.1:8501.

It reads what ``loaders.serving`` serves: on DuckDB the read-only copy of the marts published
after each green build (``<workdir>/serving.duckdb``), so it neither blocks nor waits for a
running pipeline; on PostgreSQL and Redshift the warehouse itself. Settings come from the
environment like every other part of the project (``MUSIC_ELT_WORKDIR`` or ``-- --workdir W``,
``MUSIC_ELT_TARGET``, ``WAREHOUSE_*``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path, not the repository root.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

st.set_page_config(page_title="music-elt KPIs", page_icon=":material/equalizer:", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/today:", default=True),
    st.Page("pages/genres.py", title="Genres over time", icon=":material/show_chart:"),
    st.Page("pages/hours.py", title="Hours", icon=":material/schedule:"),
    st.Page("pages/data_quality.py", title="Data quality", icon=":material/rule:"),
    st.Page("pages/revisions.py", title="Revisions", icon=":material/history:"),
    st.Page("pages/pipeline.py", title="Pipeline", icon=":material/monitor_heart:"),
]
st.navigation(PAGES).run()
