"""The volume check (dbt test ``warn_daily_plays_below_trailing_median``): silent on ordinary
days, a warning naming the days whose plays fall below the configured share of the trailing
median, with thresholds set through dbt vars."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb

from loaders.config import Settings
from loaders.dbt import run_dbt

CHECK = "warn_daily_plays_below_trailing_median"


def _check(settings: Settings, **variables: float) -> tuple[str, ...]:
    command = ["test", "--select", CHECK]
    if variables:
        command += ["--vars", json.dumps(variables)]
    return run_dbt(settings, command).warnings


def test_the_volume_check_warns_only_below_its_threshold(kpi_workdir: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(kpi_workdir / "warehouse.duckdb", work / "warehouse.duckdb")
    settings = Settings.from_env({}, workdir=work)
    with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as conn:
        days = conn.execute(
            "select listen_date, listen_count from kpi_build.daily_listeners order by 1"
        ).fetchall()
    assert len(days) == 3  # the fixture's three days, similar volumes

    assert _check(settings) == ()  # defaults: 7 trailing days, at least 3 of them: no history
    assert _check(settings, volume_min_trailing_days=1) == ()  # no day halves its history

    # a threshold above every day's share of its history: each day with one before it warns
    (line,) = _check(settings, volume_min_trailing_days=1, volume_drop_ratio=100)
    assert line.startswith(f"{len(days) - 1:,} day(s) with plays far below"), line

    # the ratio decides: just above the third day's share of its median, only it warns
    (third, plays), earlier = days[2], sorted(n for _, n in days[:2])
    median = (earlier[0] + earlier[1]) / 2
    (line,) = _check(settings, volume_min_trailing_days=2, volume_drop_ratio=plays / median + 1e-6)
    assert line.startswith("1 day(s)"), (third, line)
    assert (
        _check(settings, volume_min_trailing_days=2, volume_drop_ratio=plays / median - 1e-6) == ()
    )
