"""Whole DAG runs with ``dag.test()`` on generated data: embedded RDS and landing, and the
warehouse on DuckDB and on a real PostgreSQL (pgserver).

One work directory goes through five runs, in order, in one test (each run depends on the state
the previous one left; pytest-xdist may send separate tests to separate workers):

1. a first run loads everything, builds the marts (equal to tests/kpi_reference.py) and
   archives the stream files;
2. a run with nothing new skips everything after ``should_run`` and succeeds;
3. new stream files arrive with a duplicate user in RDS: a dbt data test fails, the dbt build
   task and the run fail, nothing is archived, and the Slack alert names the failing test;
4. after the RDS table is fixed the next run succeeds, archives the held files, and the marts
   equal the reference over every file;
5. songs change at the source with no new plays: the marts are rebuilt with the new genres.
"""

from __future__ import annotations

import atexit
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from loaders import rds
from loaders.config import Settings
from loaders.demo.embedded import embedded_server
from loaders.demo.generate import generate
from loaders.demo.seed import seed, seed_table
from loaders.landing import ARCHIVE_PREFIX, STREAMS_PREFIX, open_landing
from tests.conftest import postgres_conn_env, postgres_settings
from tests.dags.helpers import (
    assert_marts_match_reference,
    load_dag,
    read_marts,
    task_states,
    webhook_server,
)

pytestmark = pytest.mark.slow

HELD_BACK = 2  # stream files that arrive only before the third run
FAILING_TEST = "unique_stg_rds__users_user_id"


@dataclass
class Scenario:
    data: Path  # users.csv, songs.csv, streams/ as generated
    workdir: Path
    settings: Settings
    first_files: list[Path]
    held_files: list[Path]
    monkeypatch: pytest.MonkeyPatch
    marts_after_first_run: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def landed(self, prefix: str) -> list[str]:
        landing = open_landing(str(self.settings.local_landing))
        return sorted(obj.key.rsplit("/", 1)[-1] for obj in landing.list(prefix))


def _run() -> Any:
    return load_dag().test()


def _xcom(dag_run: Any, task_id: str, key: str = "return_value") -> Any:
    ti = next(ti for ti in dag_run.get_task_instances() if ti.task_id == task_id)
    return ti.xcom_pull(task_ids=task_id, key=key)


def asset_events(run_id: str) -> dict[str, int]:
    """The asset events a DAG run emitted: asset name -> the row count in the event's extra."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = session.query(AssetEvent).filter(AssetEvent.source_run_id == run_id).all()
        return {event.asset.name: event.extra["rows"] for event in events}


@pytest.fixture(params=["duckdb", "postgres"])
def scenario(
    airflow_home: Path, dbt_manifest: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Scenario]:
    root = tmp_path
    data, workdir = root / "data", root / "work"
    generate(data, streams=3000, days=2, seed=11)
    files = sorted((data / "streams").iterdir())
    first, held = files[:-HELD_BACK], files[-HELD_BACK:]
    seed_dir = root / "seed"
    (seed_dir / "streams").mkdir(parents=True)
    for name in ("users.csv", "songs.csv"):
        shutil.copy(data / name, seed_dir / name)
    for path in first:
        shutil.copy(path, seed_dir / "streams" / path.name)
    settings = Settings.from_env({}, workdir=workdir)
    warehouse_env = {}
    if request.param == "postgres":
        db = request.getfixturevalue("pg_database")
        settings = postgres_settings(settings, db)
        warehouse_env = {"MUSIC_ELT_TARGET": "postgres", **postgres_conn_env(db)}
    seed(settings, seed_dir)

    with pytest.MonkeyPatch.context() as mp:
        for name in ("MUSIC_ELT_TARGET", "MUSIC_ELT_DUCKDB_PATH", "MUSIC_ELT_LANDING"):
            mp.delenv(name, raising=False)
        mp.delenv("AIRFLOW_CONN_SLACK_WEBHOOK", raising=False)
        for name, value in warehouse_env.items():
            mp.setenv(name, value)
        mp.setenv("MUSIC_ELT_WORKDIR", str(workdir))
        mp.setenv("MUSIC_ELT_DBT_MANIFEST", str(dbt_manifest))
        mp.setenv("MUSIC_ELT_TASK_RETRIES", "0")
        yield Scenario(data, workdir, settings, first, held, mp)
    # Stop the embedded RDS now rather than at interpreter exit, when the logging streams that
    # Airflow configured during the runs are already closed.
    server = embedded_server(settings.pgdata)
    server.cleanup()
    atexit.unregister(server._cleanup)


def test_five_runs_first_nothing_new_failing_test_fixed_songs_changed(scenario: Scenario) -> None:
    _first_run_builds_the_marts_and_archives(scenario)
    _run_with_nothing_new_skips_and_succeeds(scenario)
    _failing_data_test_fails_the_run_and_archives_nothing(scenario)
    _after_fixing_the_data_the_next_run_succeeds_and_archives(scenario)
    _changed_songs_reach_the_built_marts(scenario)


def _first_run_builds_the_marts_and_archives(scenario: Scenario) -> None:
    dag_run = _run()
    states = task_states(dag_run)
    assert dag_run.state == "success", states
    assert all(state == "success" for task in states.values() for state in task), states
    assert len(states["extract"]) == 2
    assert len(states["load"]) == 3  # users, songs, one group of stream files

    marts = read_marts(scenario.settings)
    assert_marts_match_reference(marts, scenario.data, scenario.first_files)
    assert asset_events(dag_run.run_id) == {
        f"music_elt.marts.{mart}": len(rows) for mart, rows in marts.items()
    }
    assert scenario.landed(STREAMS_PREFIX) == []
    archived = scenario.landed(ARCHIVE_PREFIX + STREAMS_PREFIX)
    assert archived == sorted(p.name for p in scenario.first_files)
    scenario.marts_after_first_run = marts


def _run_with_nothing_new_skips_and_succeeds(scenario: Scenario) -> None:
    dag_run = _run()
    states = task_states(dag_run)
    assert dag_run.state == "success", states
    before_skip = ("check_rds_available", "extract", "plan", "should_run")
    for task_id, task_states_ in states.items():
        expected = "success" if task_id in before_skip else "skipped"
        assert set(task_states_) == {expected}, (task_id, task_states_)
    plan = _xcom(dag_run, "plan", key="plan")
    assert plan["should_run"] is False
    assert plan["description"].startswith("nothing new: no new stream file")
    assert _xcom(dag_run, "plan") == []  # no load group
    assert read_marts(scenario.settings) == scenario.marts_after_first_run
    assert asset_events(dag_run.run_id) == {}


def _failing_data_test_fails_the_run_and_archives_nothing(scenario: Scenario) -> None:
    landing = open_landing(str(scenario.settings.local_landing))
    for path in scenario.held_files:
        landing.put(STREAMS_PREFIX + path.name, path)
    with rds.connect(scenario.settings) as conn, conn.cursor() as cur:
        cur.execute("insert into users select * from users order by user_id limit 1")
        conn.commit()

    with webhook_server() as (url, alerts):
        slack = json.dumps({"conn_type": "slackwebhook", "password": url})
        scenario.monkeypatch.setenv("AIRFLOW_CONN_SLACK_WEBHOOK", slack)
        dag_run = _run()
        scenario.monkeypatch.delenv("AIRFLOW_CONN_SLACK_WEBHOOK")

    states = task_states(dag_run)
    assert dag_run.state == "failed", states
    assert states["dbt.dbt_producer_watcher"] == ["failed"]  # the one dbt build
    assert states["dbt.stg_rds__users.run"] == ["upstream_failed"]  # reports its tests too
    assert states["archive"] == ["upstream_failed"]
    assert states["publish"] == ["upstream_failed"]
    assert read_marts(scenario.settings) == scenario.marts_after_first_run  # readers: as before
    assert scenario.landed(STREAMS_PREFIX) == sorted(p.name for p in scenario.held_files)

    assert len(alerts) == 1, alerts
    text = alerts[0][1]["text"]
    assert "task dbt.dbt_producer_watcher failed" in text
    assert "failing dbt nodes: " in text and f"{FAILING_TEST}: Got 1 result" in text


def _after_fixing_the_data_the_next_run_succeeds_and_archives(scenario: Scenario) -> None:
    with rds.connect(scenario.settings) as conn:
        seed_table(conn, "users", scenario.data / "users.csv")

    dag_run = _run()
    states = task_states(dag_run)
    assert dag_run.state == "success", states
    assert scenario.landed(STREAMS_PREFIX) == []
    all_files = scenario.first_files + scenario.held_files
    assert scenario.landed(ARCHIVE_PREFIX + STREAMS_PREFIX) == sorted(p.name for p in all_files)
    marts = read_marts(scenario.settings)
    assert_marts_match_reference(marts, scenario.data, all_files)


def _changed_songs_reach_the_built_marts(scenario: Scenario) -> None:
    """No new plays, but songs changed at the source: the run rebuilds the marts (a full
    refresh) so that days already built show the new genres."""
    songs = scenario.data / "songs.csv"
    lines = songs.read_text(encoding="utf-8").splitlines(keepends=True)
    genre = lines[1].rstrip("\r\n").rsplit(",", 1)[1]
    renamed = [
        line.rstrip("\r\n").rsplit(",", 1)[0] + ",renamed-genre\n"
        if line.rstrip("\r\n").endswith("," + genre)
        else line
        for line in lines
    ]
    songs.write_text("".join(renamed), encoding="utf-8")
    with rds.connect(scenario.settings) as conn:
        seed_table(conn, "songs", songs)

    dag_run = _run()
    states = task_states(dag_run)
    assert dag_run.state == "success", states
    assert states["dbt.fct_genre_kpis_daily.run"] == ["success"]
    assert _xcom(dag_run, "plan", key="plan")["songs_changed"] is True
    marts = read_marts(scenario.settings)
    genres = {row["track_genre"] for row in marts["fct_genre_kpis_daily"]}
    assert "renamed-genre" in genres and genre not in genres
    assert_marts_match_reference(marts, scenario.data, scenario.first_files + scenario.held_files)


def test_a_manifest_that_is_not_the_projects_fails_the_model_task_at_once(
    airflow_home: Path,
    dbt_manifest: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The DAG renders from a manifest that lists a test of ``fct_listens`` the project no longer
    has (a manifest older than the project): the build runs the project's tests and never
    reports that one. The model task fails saying which manifest to parse again, instead of
    waiting for the build timeout; the build itself is green, so publish still runs."""
    manifest = json.loads(dbt_manifest.read_text())
    test_id, test = next(
        (uid, node)
        for uid, node in manifest["nodes"].items()
        if node["resource_type"] == "test"
        and node["depends_on"]["nodes"] == ["model.music_elt.fct_listens"]
    )
    gone = test_id.rsplit(".", 1)[0] + ".removed_since"
    manifest["nodes"][gone] = {**test, "unique_id": gone, "name": test["name"] + "_removed"}
    stale = tmp_path / "stale-manifest.json"
    stale.write_text(json.dumps(manifest))
    data, workdir = tmp_path / "data", tmp_path / "work"
    generate(data, streams=500, days=1, seed=5)
    settings = Settings.from_env({}, workdir=workdir)
    seed(settings, data)
    for name in ("MUSIC_ELT_TARGET", "MUSIC_ELT_DUCKDB_PATH", "MUSIC_ELT_LANDING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MUSIC_ELT_WORKDIR", str(workdir))
    monkeypatch.setenv("MUSIC_ELT_DBT_MANIFEST", str(stale))
    monkeypatch.setenv("MUSIC_ELT_TASK_RETRIES", "0")
    monkeypatch.setenv("MUSIC_ELT_BUILD_TIMEOUT_SECONDS", "600")  # a hang fails, but late
    try:
        dag_run = _run()
        states = task_states(dag_run)
        assert states["dbt.fct_listens.run"] == ["failed"], states
        assert states["dbt.dim_users.run"] == ["success"], states
        assert states["publish"] == ["success"], states
        assert "is not the project's; parse it again (`make manifest" in caplog.text
    finally:
        server = embedded_server(settings.pgdata)
        server.cleanup()
        atexit.unregister(server._cleanup)
