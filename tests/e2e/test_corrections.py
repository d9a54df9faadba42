"""A key delivered again with other content is a correction (the contract, "Re-delivered objects"):
the marts count its latest version only, as if the earlier one never arrived, on DuckDB and
PostgreSQL; the earlier version's raw rows stay, marked superseded; every version is archived
under its own name; and the incremental result equals a full refresh."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from loaders import pipeline
from loaders.config import Settings
from loaders.dbt import run_dbt
from loaders.warehouse import open_warehouse
from music_elt_demo.generate import generate
from music_elt_demo.seed import seed
from tests.checks import published
from tests.conftest import postgres_settings
from tests.kpi_reference import MARTS, assert_rows_match, compute_kpis

pytestmark = pytest.mark.slow

# a file of its own on days no generated file touches: its correction moves every play of
# 2025-12-01 to 2025-12-02 (a day that vanishes) and changes tracks and users of others
FIRST = (
    "user_id,track_id,listen_time\n"
    "1,{a},2025-12-01 08:15:00\n"
    "2,{a},2025-12-01 08:45:00\n"
    "3,{b},2025-12-03 21:00:00\n"
    "4,{b},2025-12-03 21:30:00\n"
)
CORRECTED = (
    "user_id,track_id,listen_time\n"
    "1,{a},2025-12-02 08:15:00\n"
    "2,{b},2025-12-02 08:45:00\n"
    "3,{b},2025-12-03 21:00:00\n"
    "5,{a},2025-12-03 21:30:00\n"
)


def _marts(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for mart, spec in MARTS.items():
        rows = published(settings, f"select {', '.join(spec.columns)} from marts.{mart}")
        out[mart] = [dict(zip(spec.columns, row, strict=True)) for row in rows]
    return out


@pytest.mark.parametrize("warehouse_kind", ["duckdb", "postgres"])
def test_a_corrected_file_replaces_its_earlier_version_everywhere(
    warehouse_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data = tmp_path / "data"
    generate(data, streams=4000, days=2, seed=5, users=300, songs=200)
    tracks = [line.split(",")[1] for line in (data / "songs.csv").read_text().splitlines()[1:3]]
    settings = Settings.from_env({}, workdir=tmp_path / "work")
    if warehouse_kind == "postgres":
        settings = postgres_settings(settings, request.getfixturevalue("pg_database"))
    first = data / "streams" / "zz_correction.csv"
    first.write_text(FIRST.format(a=tracks[0], b=tracks[1]))
    seed(settings, data)
    pipeline.run(settings, progress=print)

    # the producer re-delivers the same key with corrected content
    corrected = tmp_path / "corrected" / "zz_correction.csv"
    corrected.parent.mkdir()
    corrected.write_text(CORRECTED.format(a=tracks[0], b=tracks[1]))
    landing = pipeline.landing_store(settings)
    landing.put("streams/zz_correction.csv", corrected)
    summary = pipeline.run(settings, progress=print)
    assert summary.load is not None
    assert summary.load.files_superseded == ("streams/zz_correction.csv",)

    latest = [*sorted(p for p in (data / "streams").iterdir() if p != first), corrected]
    expected = compute_kpis(data / "users.csv", data / "songs.csv", latest, datetime.now())
    incremental = _marts(settings)
    for mart, spec in MARTS.items():
        assert_rows_match(
            expected.rows(mart), incremental[mart], key=spec.key, columns=spec.columns, label=mart
        )
    days = {row["listen_date"] for row in incremental["fct_genre_kpis_daily"]}
    assert str(min(days)) == "2025-12-02"  # the day the correction emptied is gone

    # every version archived under its own name; both in raw, the earlier one superseded
    archived = [o.key for o in landing.list("archive/streams/") if "zz_correction" in o.key]
    assert len(archived) == 2 and len(set(archived)) == 2
    with open_warehouse(settings) as wh:
        versions = wh.query(
            "select superseded_at is not null from raw_meta.load_ledger "
            "where object_key = 'streams/zz_correction.csv' order by loaded_at"
        )
        raw = wh.query(
            "select count(*) from raw_streams.streams "
            "where _source_file = 'streams/zz_correction.csv'"
        )
    assert [flag for (flag,) in versions] == [True, False]
    assert raw == [(8,)]

    # and a full refresh of the same warehouse gives the same marts
    run_dbt(settings, ["build", "--full-refresh"])
    refreshed = _marts(settings)
    for mart, spec in MARTS.items():
        assert_rows_match(
            incremental[mart],
            refreshed[mart],
            key=spec.key,
            columns=spec.columns,
            rel_tol=1e-12,
            label=f"full refresh of {mart}",
        )
    shutil.rmtree(tmp_path / "corrected")
