"""The revision log (``marts.kpi_revisions``): what each publish changed in KPI values readers
had already seen, on DuckDB and PostgreSQL.

Every publish of the scenario is checked against an independent computation: the published
marts are read before and after it (as readers read them), compared value by value in Python,
and the log's new rows must be exactly those differences (the contract's text formats, floats
with a relative tolerance of 1e-9, periods published for the first time left out). Then the
cases the contract names: a late file for an old day and hour, a correction that removes
plays, a songs snapshot that renames a genre's top track, an identical re-delivery, a new
period, and a split of the same files into runs whose publishes show the same states.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from loaders import pipeline
from loaders.config import Settings
from loaders.demo.generate import generate
from loaders.demo.seed import seed
from loaders.serving import REVISION_COLUMNS, open_reader
from loaders.warehouse import open_warehouse
from tests.conftest import new_database, postgres_settings
from tests.kpi_reference import MARTS

pytestmark = pytest.mark.slow

Snapshot = dict[str, dict[tuple[Any, ...], dict[str, Any]]]
Revision = tuple[str, str, str, str | None, str | None]


def _grain_text(key: tuple[Any, ...]) -> str:
    parts = []
    for value in key:
        if isinstance(value, datetime):
            parts.append(value.strftime("%Y-%m-%d %H:%M:%S"))
        elif isinstance(value, date):
            parts.append(value.isoformat())
        else:
            parts.append(str(value))
    return "|".join(parts)


def snapshot(settings: Settings) -> Snapshot:
    """The published KPI marts, as readers see them, by grain key."""
    out: Snapshot = {}
    for mart, spec in MARTS.items():
        rows = open_reader(settings).query(f"select {', '.join(spec.columns)} from marts.{mart}")
        out[mart] = {}
        for row in rows:
            record = dict(zip(spec.columns, row, strict=True))
            out[mart][tuple(record[c] for c in spec.key)] = record
    return out


def _changed(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return (old is None) != (new is None)
    if isinstance(old, float) or isinstance(new, float):
        return abs(old - new) > 1e-9 * max(abs(old), abs(new))
    return bool(old != new)


def expected_revisions(before: Snapshot, after: Snapshot) -> set[tuple[str, str, str]]:
    """(mart, grain, kpi) of every value a publish changed in a period already published."""
    out = set()
    for mart, spec in MARTS.items():
        periods = {key[0] for key in before[mart]}
        for key in before[mart].keys() | after[mart].keys():
            if key not in before[mart] and key[0] not in periods:
                continue  # a period published for the first time
            old, new = before[mart].get(key, {}), after[mart].get(key, {})
            for column in spec.columns:
                if column not in spec.key and _changed(old.get(column), new.get(column)):
                    out.add((mart, _grain_text(key), column))
    return out


def _matches(text: str | None, value: Any) -> bool:
    """Whether a logged value (text) is the published value."""
    if value is None or text is None:
        return value is None and text is None
    if isinstance(value, float):
        return math.isclose(float(text), value, rel_tol=1e-12)
    if isinstance(value, (datetime, date)):
        return text == _grain_text((value,))
    return text == str(value)


def revisions(settings: Settings) -> list[dict[str, Any]]:
    """The log as readers read it (marts.kpi_revisions), oldest publish first."""
    columns = ", ".join(REVISION_COLUMNS)
    rows = open_reader(settings).query(
        f"select {columns} from marts.kpi_revisions order by new_published_at, mart, grain, kpi"
    )
    return [dict(zip(REVISION_COLUMNS, row, strict=True)) for row in rows]


class Scenario:
    """A work directory and its generated source, run step by step; each run's publish is
    checked against the independent computation."""

    def __init__(self, settings: Settings, source: Path) -> None:
        self.settings, self.source = settings, source
        self.landing = pipeline.landing_store(settings)
        self.published: Snapshot | None = None

    def run(self, *, publish: bool = True) -> list[dict[str, Any]]:
        """One pipeline run; returns the revisions its publish logged (checked)."""
        known = len(revisions(self.settings)) if self.published is not None else 0
        before = self.published
        if publish:
            pipeline.run(self.settings, progress=lambda _line: None)
        else:  # a run whose publish died: everything but the publish
            run_id = pipeline.new_run_id()
            plan = pipeline.plan_run(
                self.settings,
                self.landing,
                pipeline.extract(self.settings, self.landing, run_id, progress=_quiet),
                run_id=run_id,
                force_build=False,
                progress=_quiet,
            )
            report = pipeline.load_all(self.settings, self.landing, plan, progress=_quiet)
            pipeline.build(self.settings, run_id)
            pipeline.archive(self.settings, self.landing, plan, report, progress=_quiet)
            return []
        after = self.published = snapshot(self.settings)
        log = revisions(self.settings)
        new = log[known:]
        if before is None:
            assert new == [], "the first publish revises nothing"
            return new
        assert {(r["mart"], r["grain"], r["kpi"]) for r in new} == expected_revisions(before, after)
        for row in new:
            spec = MARTS[row["mart"]]
            key = next(
                k
                for k in after[row["mart"]] | before[row["mart"]]
                if _grain_text(k) == row["grain"]
            )
            assert _matches(row["old_value"], before[row["mart"]].get(key, {}).get(row["kpi"])), row
            assert _matches(row["new_value"], after[row["mart"]].get(key, {}).get(row["kpi"])), row
            assert (
                row["old_published_at"] is not None
                and row["old_published_at"] < row["new_published_at"]
            )
            assert row["kpi"] in spec.columns and row["kpi"] not in spec.key
        assert len({r["new_published_at"] for r in new}) <= 1  # one publish
        assert log[:known] == revisions(self.settings)[:known]  # append-only
        return new

    def deliver(self, key: str, text: str) -> None:
        path = self.source / "deliveries" / key.replace("/", "_")
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        self.landing.put(key, path)


def _quiet(_line: str) -> None:
    pass


def _plays(rows: list[tuple[int, str, str]]) -> str:
    return "user_id,track_id,listen_time\n" + "".join(f"{u},{t},{w}\n" for u, t, w in rows)


def _setup(tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> tuple[Scenario, list[str]]:
    source = tmp_path / "source"
    generate(source, streams=1500, days=2, seed=31, users=200, songs=120)
    settings = Settings.from_env({}, workdir=tmp_path / "work")
    if kind == "postgres":
        settings = postgres_settings(settings, new_database(request.getfixturevalue("pg_server")))
    seed(settings, source, progress=_quiet)
    with (source / "songs.csv").open(newline="") as songs:
        tracks = [row["track_id"] for row in csv.DictReader(songs)][:3]
    return Scenario(settings, source), tracks


def _first_day(scenario: Scenario) -> date:
    assert scenario.published is not None
    return min(key[0] for key in scenario.published["fct_genre_kpis_daily"])


def _late_plays(day: date, tracks: list[str]) -> list[tuple[int, str, str]]:
    return [
        (1, tracks[0], f"{day} 05:10:00"),
        (2, tracks[0], f"{day} 05:20:00"),
        (3, tracks[1], f"{day} 05:30:00"),
        (9_999_999, "0000000000000000000000", f"{day} 05:40:00"),  # unknown track
    ]


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_each_publish_logs_exactly_what_it_changed(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    scenario, tracks = _setup(tmp_path, kind, request)
    assert scenario.run() == []  # the first publish of every period adds nothing
    day = _first_day(scenario)
    hour = f"{day} 05:00:00"

    # a late file for an old day and hour
    scenario.deliver("streams/late/zz_late.csv", _plays(_late_plays(day, tracks)))
    late = scenario.run()
    assert late, "a late file for a published day revises it"
    hourly = {r["kpi"]: r for r in late if r["mart"] == "fct_listening_kpis_hourly"}
    assert int(hourly["listen_count"]["new_value"]) == int(hourly["listen_count"]["old_value"]) + 4
    assert hourly["listen_count"]["grain"] == hour
    assert {r["mart"] for r in late} >= {"fct_genre_kpis_daily", "fct_listening_kpis_hourly"}
    assert all(json.loads(r["caused_by"]) == ["streams/late/zz_late.csv"] for r in late)
    unknown = [r for r in late if r["grain"] == f"{day}|unknown" and r["kpi"] == "listen_count"]
    assert (
        len(unknown) == 1 and int(unknown[0]["new_value"]) == int(unknown[0]["old_value"] or 0) + 1
    )

    # an identical re-delivery under another key: its plays are duplicates, nothing changes
    scenario.deliver("streams/late/zz_late_again.csv", _plays(_late_plays(day, tracks)))
    assert scenario.run() == []

    # a correction that removes plays: the late file again, without two of its rows
    scenario.deliver("streams/late/zz_late.csv", _plays(_late_plays(day, tracks)[2:]))
    scenario.deliver("streams/late/zz_late_again.csv", _plays(_late_plays(day, tracks)[2:]))
    removed = scenario.run()
    hourly = {r["kpi"]: r for r in removed if r["mart"] == "fct_listening_kpis_hourly"}
    assert int(hourly["listen_count"]["new_value"]) == int(hourly["listen_count"]["old_value"]) - 2
    assert set(json.loads(removed[0]["caused_by"])) == {
        "streams/late/zz_late.csv",
        "streams/late/zz_late_again.csv",
    }

    # a new day: a period published for the first time adds no revision
    scenario.deliver("streams/zz_new_day.csv", _plays([(1, tracks[0], "2031-01-01 10:00:00")]))
    assert scenario.run() == []

    # a songs snapshot that renames the top track of a genre on the first day
    assert scenario.published is not None
    genre_rows = [
        row
        for key, row in scenario.published["fct_genre_kpis_daily"].items()
        if key[0] == day and row["most_popular_track_name"] is not None
    ]
    top = max(genre_rows, key=lambda row: row["listen_count"])
    with (scenario.source / "songs.csv").open(newline="") as src:
        reader = csv.DictReader(src)
        fields, rows = reader.fieldnames, list(reader)
    for row in rows:
        if row["track_id"] == top["most_popular_track_id"]:
            row["track_name"] = "Renamed: " + row["track_name"]
    assert fields is not None
    with (scenario.source / "songs.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    seed(scenario.settings, scenario.source, progress=_quiet)
    renamed = scenario.run()
    names = [
        r
        for r in renamed
        if r["kpi"] == "most_popular_track_name" and r["grain"] == f"{day}|{top['track_genre']}"
    ]
    assert len(names) == 1 and names[0]["new_value"] == "Renamed: " + top["most_popular_track_name"]
    assert any(key.startswith("rds/songs/") for key in json.loads(names[0]["caused_by"]))

    # nothing new: no publish, no revision; and the dbt model over the log agrees
    assert scenario.run() == []
    log = revisions(scenario.settings)
    with open_warehouse(scenario.settings) as wh:
        mirrored = wh.query(
            f"select {', '.join(REVISION_COLUMNS)} from raw_meta.kpi_revisions "
            "order by new_published_at, mart, grain, kpi"
        )
    assert [dict(zip(REVISION_COLUMNS, row, strict=True)) for row in mirrored] == log


def _comparable(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Revisions without their publish times (two work directories publish at other times)."""
    return sorted(
        (r["mart"], r["grain"], r["kpi"], r["old_value"], r["new_value"], r["caused_by"])
        for r in rows
    )


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_a_split_of_the_same_files_into_runs_logs_the_same_revisions(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two late files loaded in one run, or in two runs of which only the second publishes
    (the first one's publish died): readers saw the same two states, so the log is the same."""
    logs = []
    for split in (False, True):
        work = tmp_path / ("split" if split else "whole")
        scenario, tracks = _setup(work, kind, request)
        scenario.run()
        day = _first_day(scenario)
        scenario.deliver("streams/late/a.csv", _plays(_late_plays(day, tracks)[:2]))
        if split:
            scenario.run(publish=False)
        scenario.deliver("streams/late/b.csv", _plays(_late_plays(day, tracks)[2:]))
        logs.append(_comparable(scenario.run()))
        if kind == "postgres":
            shutil.rmtree(work / "work", ignore_errors=True)
    assert logs[0] and logs[0] == logs[1]
    assert all(
        json.loads(row[-1]) == ["streams/late/a.csv", "streams/late/b.csv"] for row in logs[0]
    )
