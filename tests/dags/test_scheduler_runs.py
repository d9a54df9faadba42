"""The DAG under a real Airflow scheduler (tests/dags/scheduler.py), driven through the REST API
as a user does from the UI: runs, a failing build, clears, retries, a CLI run racing the DAG and
a hung build. ``dag.test()`` (test_dag_runs.py) runs tasks in-process, where retries and clears
do not behave as they do under a scheduler.

One Airflow serves the scenarios on the embedded stack (DuckDB), in order on one work
directory, because the DAG's environment is fixed when the DAG file is parsed; each scenario is a
subtest, so that one failing does not hide the others' result:

a. a first run: green, files archived, the published marts equal tests/kpi_reference.py;
d. a model task of that green run cleared: it reports the producer's build again, no dbt alone;
b. a failing data test: the run fails, its files stay in streams/, readers still see run a's
   marts, the Slack alert names the test;
c. the RDS data fixed and the failed run cleared: the run rebuilds, archives and publishes;
e. the load task's first try fails (the test holds the run lock), the retry loads: green;
f. ``music-elt run`` while the DAG's dbt build runs: exit 2 naming the holder, nothing touched;
h. the RDS songs table renamed away: its extract fails on its first try, without the retry the
   task has (a configuration error is terminal).

A second Airflow, on PostgreSQL, checks a hung build (g): the build task ends on its timeout,
alerts and frees its pool slot; a new run succeeds once the lock is released.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from loaders import rds
from loaders.config import Settings
from loaders.demo.embedded import embedded_server
from loaders.demo.generate import generate
from loaders.demo.seed import seed, seed_table
from loaders.landing import ARCHIVE_PREFIX, STREAMS_PREFIX, open_landing
from loaders.warehouse import BUILDS_TABLE, LEDGER_TABLE, open_warehouse
from tests.conftest import pg_dsn, postgres_conn_env, postgres_settings
from tests.dags.helpers import DAG_ID, assert_marts_match_reference, webhook_server
from tests.dags.scheduler import Airflow, AirflowError, airflow_instance, pipeline_run_id

pytestmark = pytest.mark.slow

PRODUCER = "dbt.dbt_producer_watcher"
MODEL_TASK = "dbt.fct_listens.run"  # a model the KPI marts read
FAILING_TEST = "unique_stg_rds__users_user_id"
FIRST_FILES = 7  # of the 11 generated stream files; two more arrive for b, the last two for e/f
# seconds for one DAG run on a few thousand plays: 80 s on a quiet 2-core machine, up to 4 min
# when it is shared with other test runs
RUN_TIMEOUT = 480
# What Cosmos logs when a producer's retry skips the build, or a model task runs dbt alone
SKIPPED_BUILD = "skipping execution"
MODEL_ALONE = ("Retry attempt", "Falling back to running model", "Running model")
DBT_NODE_STARTED = re.compile(r"\b\d+ of \d+ START ")  # dbt's line as a node starts building

# The DAG's environment (read when Airflow parses the DAG file)
DAG_ENV = {
    "MUSIC_ELT_SCHEDULE": "",  # no run but those the tests trigger
    "MUSIC_ELT_TASK_RETRIES": "1",  # e: the load's first try fails, its retry loads
    "MUSIC_ELT_RETRY_DELAY_SECONDS": "3",
    "MUSIC_ELT_LOCK_WAIT_SECONDS": "5",
    "MUSIC_ELT_TASK_TIMEOUT_SECONDS": "300",  # TASK_TIMEOUT
    "MUSIC_ELT_BUILD_TIMEOUT_SECONDS": "600",
    "MUSIC_ELT_RDS_WAIT_SECONDS": "20",
}

Marts = dict[str, list[dict[str, Any]]]


@dataclass
class Stack:
    """The embedded stack of one work directory, the Airflow that runs the DAG on it, and what
    the scenarios left for the next ones."""

    airflow: Airflow
    data: Path  # users.csv, songs.csv, streams/ as generated
    workdir: Path
    settings: Settings
    files: list[Path]  # every generated stream file, in order
    alerts: list[tuple[str, dict[str, Any]]]  # what the Slack webhook received
    delivered: list[Path] = field(default_factory=list)  # stream files put in landing so far
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # scenario -> its DAG run
    green_marts: Marts = field(default_factory=dict)  # published after run a

    def deliver(self, files: list[Path]) -> None:
        landing = open_landing(str(self.settings.local_landing))
        for path in files:
            landing.put(STREAMS_PREFIX + path.name, path)
        self.delivered += files

    def keys(self, prefix: str = "") -> list[str]:
        landing = open_landing(str(self.settings.local_landing))
        return sorted(obj.key for obj in landing.list(prefix))

    def waiting(self) -> list[str]:
        """Names of the stream files in streams/ (not archived)."""
        return sorted(key.rsplit("/", 1)[-1] for key in self.keys(STREAMS_PREFIX))

    def archived(self) -> Counter[str]:
        """How many times each stream file name is under archive/streams/."""
        return Counter(key.rsplit("/", 1)[-1] for key in self.keys(ARCHIVE_PREFIX + STREAMS_PREFIX))

    def builds(self) -> list[str]:
        """load_id of each row of raw_meta.dbt_builds (the log of green builds)."""
        with open_warehouse(self.settings) as wh:
            return [row[0] for row in wh.query(f"select load_id from {BUILDS_TABLE}")]

    def ledger(self) -> list[tuple[str, str, str]]:
        """(object key, status, load id) of every ledger row."""
        with open_warehouse(self.settings) as wh:
            rows = wh.query(f"select object_key, status, load_id from {LEDGER_TABLE}")
        return [(str(k), str(s), str(i)) for k, s, i in rows]

    def run_and_wait(self, name: str) -> dict[str, Any]:
        run = self.airflow.trigger()
        self.runs[name] = run
        return self.airflow.wait_for_run(run["dag_run_id"], RUN_TIMEOUT)


def published_marts(settings: Settings) -> Marts:
    """Every row of the three KPI marts as readers see them (loaders.serving: the serving copy on
    DuckDB, the published relations on PostgreSQL), as dicts, sorted."""
    from loaders.serving import open_reader
    from tests.kpi_reference import MARTS

    marts = {}
    with open_reader(settings).session() as session:
        for mart, spec in MARTS.items():
            relation = session.relation(f"marts.{mart}")
            rows = session.query(f"select {', '.join(spec.columns)} from {relation}")
            dicts = [dict(zip(spec.columns, row, strict=True)) for row in rows]
            marts[mart] = sorted(dicts, key=lambda r: tuple(str(v) for v in r.values()))
    return marts


def _prepare(root: Path, settings: Settings) -> tuple[Path, list[Path]]:
    """Generate a few thousand plays in root/data and seed the embedded RDS and landing with
    the users, the songs and the first stream files."""
    data = root / "data"
    generate(data, streams=3000, days=2, seed=11)
    files = sorted((data / "streams").iterdir())
    seed_dir = root / "seed"
    (seed_dir / "streams").mkdir(parents=True)
    for name in ("users.csv", "songs.csv"):
        shutil.copy(data / name, seed_dir / name)
    for path in files[:FIRST_FILES]:
        shutil.copy(path, seed_dir / "streams" / path.name)
    seed(settings, seed_dir, progress=lambda _line: None)
    return data, files


def _stop_embedded_rds(settings: Settings) -> None:
    """Stop the embedded RDS now rather than at interpreter exit (as test_dag_runs.py does)."""
    import atexit

    server = embedded_server(settings.pgdata)
    server.cleanup()
    atexit.unregister(server._cleanup)


def _slack_env(url: str) -> dict[str, str]:
    return {
        "AIRFLOW_CONN_SLACK_WEBHOOK": json.dumps({"conn_type": "slackwebhook", "password": url})
    }


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("scheduler")
    workdir = root / "work"
    settings = Settings.from_env({}, workdir=workdir)
    with ExitStack() as stop:
        airflow = stop.enter_context(airflow_instance(root / "airflow"))  # migrates meanwhile:
        dbt_manifest = request.getfixturevalue("dbt_manifest")
        url, alerts = stop.enter_context(webhook_server())
        stop.callback(_stop_embedded_rds, settings)
        data, files = _prepare(root, settings)
        dag_env = {
            **DAG_ENV,
            "MUSIC_ELT_WORKDIR": str(workdir),
            "MUSIC_ELT_DBT_MANIFEST": str(dbt_manifest),
            **_slack_env(url),
        }
        airflow.start(dag_env)
        stack = Stack(airflow, data, workdir, settings, files, alerts)
        stack.delivered = files[:FIRST_FILES]
        yield stack


def test_runs_clears_and_retries_under_the_scheduler(
    stack: Stack, subtests: pytest.Subtests
) -> None:
    with subtests.test("a: a green run builds, archives and publishes"):
        _a_green_run(stack)
    if not stack.green_marts:
        pytest.fail("the first run is not green: the other scenarios need it")
    with subtests.test("d: a cleared model task reports the build, runs no dbt alone"):
        _d_cleared_model_task_reports_the_build(stack)
    with subtests.test("b: a failing data test fails the run; readers keep the green marts"):
        _b_failing_test_archives_and_publishes_nothing(stack)
    with subtests.test("c: the failed run cleared after the fix rebuilds and archives"):
        _c_cleared_failed_run_does_the_work(stack)
    retried_load, cli_run = _e_f_run_with_a_held_lock_and_a_cli_run(stack)
    with subtests.test("e: the load's first try fails on the held lock, its retry loads"):
        retried_load()
    with subtests.test("f: a CLI run during the DAG's build stops, naming the holder"):
        cli_run()
    with subtests.test("h: a terminal error fails its task at once, without the retry"):
        _h_terminal_error_is_not_retried(stack)


# -- a -------------------------------------------------------------------------------------------
def _a_green_run(stack: Stack) -> None:
    airflow = stack.airflow
    run = stack.run_and_wait("a")
    run_id = run["dag_run_id"]
    states = airflow.task_states(run_id)
    assert run["state"] == "success", airflow.explain(run_id)
    assert all(s == "success" for task in states.values() for s in task), states
    assert len(states["extract"]) == 2
    runs = airflow.get(f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]
    assert [r["dag_run_id"] for r in runs] == [run_id], "the DAG scheduled runs of its own"
    assert stack.waiting() == []
    assert stack.archived() == Counter(p.name for p in stack.delivered)
    assert stack.builds() == [pipeline_run_id(run)]
    marts = published_marts(stack.settings)
    assert_marts_match_reference(marts, stack.data, stack.delivered)
    stack.green_marts = marts


# -- d -------------------------------------------------------------------------------------------
def _d_cleared_model_task_reports_the_build(stack: Stack) -> None:
    """Clearing one model task of a green run: its next try reports the producer's result (the
    build of that run) and ends success; it never runs ``dbt run`` for that model alone."""
    airflow = stack.airflow
    run = stack.runs["a"]
    run_id = run["dag_run_id"]
    tasks = {ti["task_id"] for ti in airflow.task_instances(run_id)}
    assert MODEL_TASK in tasks, sorted(tasks)
    tries = airflow.task_instance(run_id, MODEL_TASK)["try_number"]
    airflow.clear_tasks(run_id, [MODEL_TASK])
    airflow.wait_until(
        lambda: airflow.task_instance(run_id, MODEL_TASK)["try_number"] > tries,
        60,
        f"{MODEL_TASK} was not queued again after the clear",
        run_id=run_id,
    )
    after = airflow.wait_for_run(run_id, RUN_TIMEOUT)
    ti = airflow.task_instance(run_id, MODEL_TASK)
    log = airflow.task_log(run_id, MODEL_TASK, ti["try_number"])
    assert (after["state"], ti["state"], ti["try_number"]) == ("success", "success", tries + 1), (
        airflow.explain(run_id)
    )
    ran_alone = [line for line in log.splitlines() if any(m in line for m in MODEL_ALONE)]
    assert not ran_alone, f"{MODEL_TASK} try 2 ran dbt for its model alone:\n" + "\n".join(
        ran_alone
    )
    assert stack.builds() == [pipeline_run_id(run)]  # no second build recorded
    assert published_marts(stack.settings) == stack.green_marts


# -- b -------------------------------------------------------------------------------------------
def _b_failing_test_archives_and_publishes_nothing(stack: Stack) -> None:
    airflow = stack.airflow
    new_files = stack.files[FIRST_FILES : FIRST_FILES + 2]
    stack.deliver(new_files)
    with rds.connect(stack.settings) as conn, conn.cursor() as cur:
        cur.execute("insert into users select * from users order by user_id limit 1")
        conn.commit()
    alerts_before = len(stack.alerts)

    run = stack.run_and_wait("b")
    run_id = run["dag_run_id"]
    states = airflow.task_states(run_id)
    assert run["state"] == "failed", airflow.explain(run_id)
    assert states[PRODUCER] == ["failed"], states
    for task_id in ("archive", "publish"):
        assert states[task_id] == ["upstream_failed"], (task_id, states)
    assert stack.waiting() == sorted(p.name for p in new_files)  # nothing archived
    assert not set(stack.archived()) & {p.name for p in new_files}
    assert pipeline_run_id(run) not in stack.builds()
    assert published_marts(stack.settings) == stack.green_marts  # readers see run a's build

    texts = [body.get("text", "") for _path, body in stack.alerts[alerts_before:]]
    assert any(f"task {PRODUCER} failed" in t and FAILING_TEST in t for t in texts), texts


# -- c -------------------------------------------------------------------------------------------
def _c_cleared_failed_run_does_the_work(stack: Stack) -> None:
    """After the data is fixed, clearing the failed run (the UI's "Clear" on the run) builds,
    records, archives and publishes: a green state only once the work is done."""
    airflow = stack.airflow
    run = stack.runs["b"]
    run_id = run["dag_run_id"]
    assert airflow.dag_run(run_id)["state"] == "failed", "scenario b left no failed run"
    with rds.connect(stack.settings) as conn:
        seed_table(conn, "users", stack.data / "users.csv")

    tries = airflow.task_instance(run_id, PRODUCER)["try_number"]
    airflow.clear_run(run_id)
    airflow.wait_until(
        lambda: airflow.task_instance(run_id, PRODUCER)["try_number"] > tries,
        60,
        "the producer was not queued again after the clear",
        run_id=run_id,
    )
    after = airflow.wait_for_run(run_id, RUN_TIMEOUT)
    producer = airflow.task_instance(run_id, PRODUCER)
    log = airflow.task_log(run_id, PRODUCER, producer["try_number"])
    assert producer["state"] == "success" and DBT_NODE_STARTED.search(log), (
        f"the producer's try {producer['try_number']} ended {producer['state']} without a dbt "
        f"build (Cosmos skips a producer's retry: {SKIPPED_BUILD!r}):\n{airflow.explain(run_id)}"
    )
    assert after["state"] == "success", airflow.explain(run_id)
    assert pipeline_run_id(run) in stack.builds(), "no green build recorded for the cleared run"
    assert stack.waiting() == []
    assert stack.archived() == Counter(p.name for p in stack.delivered)
    assert_marts_match_reference(published_marts(stack.settings), stack.data, stack.delivered)


# -- e and f: one run ----------------------------------------------------------------------------
def _e_f_run_with_a_held_lock_and_a_cli_run(stack: Stack) -> tuple[Any, Any]:
    """One run for e and f (a run costs about a minute): the test holds the run lock (which
    holds the DuckDB file too) from the end of ``plan`` until the first try of ``load`` has
    failed; then, while the dbt producer builds, it starts ``music-elt run`` on the same work
    directory. Returns the checks of e and of f."""
    from loaders.runlock import run_lock

    airflow = stack.airflow
    new_files = stack.files[FIRST_FILES + 2 :]
    stack.deliver(new_files)
    runs_before = dict(stack.runs)
    run = airflow.trigger()
    stack.runs["e"] = run
    run_id = run["dag_run_id"]

    def states() -> dict[str, list[str]]:
        return airflow.task_states(run_id)

    # e: hold the lock from plan's end to the load's first failure
    airflow.wait_until(
        lambda: states().get("plan") == ["success"], 120, "plan did not succeed", run_id=run_id
    )
    load_first_try: list[str] = []
    with run_lock(stack.settings, HOLDER):

        def first_try_over() -> bool:
            loads = [ti for ti in airflow.task_instances(run_id) if ti["task_id"] == "load"]
            ended = (*TRY_OVER, "success")  # success: the lock did not stop it (e fails)
            over = [ti for ti in loads if ti["try_number"] >= 2 or ti["state"] in ended]
            load_first_try[:] = [
                "up_for_retry" if ti["try_number"] >= 2 else str(ti["state"]) for ti in over
            ]
            return bool(loads) and len(over) == len(loads)

        airflow.wait_until(first_try_over, 120, "load's first try did not end", run_id=run_id)

    # f: a CLI run while the producer builds
    cli: dict[str, Any] = {}
    airflow.wait_until(
        lambda: states().get(PRODUCER) in (["running"], ["success"], ["failed"]),
        180,
        "the producer did not start",
        run_id=run_id,
        interval=0.2,
    )

    def building() -> bool:  # dbt has the warehouse open: its first node started
        ti = airflow.task_instance(run_id, PRODUCER)
        if ti["state"] != "running":
            return ti["state"] in TRY_OVER or ti["state"] == "success"
        return bool(DBT_NODE_STARTED.search(airflow.task_log(run_id, PRODUCER, ti["try_number"])))

    airflow.wait_until(building, 120, "the producer's dbt build did not start", run_id=run_id)
    if states().get(PRODUCER) == ["running"]:
        landing_before = stack.keys()
        started = time.monotonic()
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("MUSIC_ELT_", "WAREHOUSE_", "AIRFLOW"))
        }
        env["MUSIC_ELT_LOCK_WAIT_SECONDS"] = "1"
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "music-elt"),
                "run",
                "--workdir",
                str(stack.workdir),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        cli = {
            "result": result,
            "seconds": time.monotonic() - started,
            "producer_after": states().get(PRODUCER),
            "landing_unchanged": stack.keys() == landing_before,
        }

    final = airflow.wait_for_run(run_id, RUN_TIMEOUT)
    dag_run_ids = {pipeline_run_id(r) for r in (*runs_before.values(), run)}

    def retried_load() -> None:
        assert load_first_try and all(s in TRY_OVER for s in load_first_try), (
            f"the load's first try did not fail while the test held the run lock: {load_first_try}"
        )
        loads = [ti for ti in airflow.task_instances(run_id) if ti["task_id"] == "load"]
        for ti in loads:
            first = airflow.task_log(run_id, "load", 1, ti["map_index"])
            assert HOLDER in first, (
                "the load's first try does not name the lock's holder (it should wait "
                "MUSIC_ELT_LOCK_WAIT_SECONDS for the run lock, then fail naming it):\n"
                + "\n".join(first.splitlines()[-15:])
            )
        assert [(ti["state"], ti["try_number"]) for ti in loads] == [("success", 2)] * len(loads), (
            airflow.explain(run_id)
        )
        assert final["state"] == "success", airflow.explain(run_id)
        assert_marts_match_reference(published_marts(stack.settings), stack.data, stack.delivered)

    def cli_run() -> None:
        assert cli, "the producer was not running when the test looked: no CLI run tried"
        result = cli["result"]
        err_lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert cli["producer_after"] == ["running"], (
            f"the DAG's build ended before the CLI did ({cli['seconds']:.1f}s): inconclusive\n"
            f"{result.stdout}\n{result.stderr}"
        )
        assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
        assert len(err_lines) == 1, result.stderr
        assert "another run holds" in err_lines[0] and "pid" in err_lines[0], err_lines
        assert cli["landing_unchanged"], "the CLI changed landing"
        assert final["state"] == "success", airflow.explain(run_id)
        assert stack.waiting() == []
        assert stack.archived() == Counter(p.name for p in stack.delivered)  # each once
        load_ids = {load_id for _key, _status, load_id in stack.ledger()}
        assert load_ids <= dag_run_ids, (
            f"the ledger has loads of no DAG run: {load_ids - dag_run_ids}"
        )
        assert set(stack.builds()) <= dag_run_ids, stack.builds()

    return retried_load, cli_run


TRY_OVER = ("up_for_retry", "failed")
HOLDER = "tests/dags/test_scheduler_runs.py holds the run lock"  # the command the lock records


# -- h -------------------------------------------------------------------------------------------
def _h_terminal_error_is_not_retried(stack: Stack) -> None:
    """With the RDS ``songs`` table renamed away (a ConfigError: terminal), ``extract`` of songs
    fails on try 1 and stays failed, although the task has the retry that the transient lock
    of e used; extract of users succeeds, and the run loads and builds nothing. The table is
    renamed back afterwards."""
    airflow = stack.airflow
    assert airflow.task("extract")["retries"] == int(DAG_ENV["MUSIC_ELT_TASK_RETRIES"]) == 1
    ledger, builds = stack.ledger(), stack.builds()
    _rename_rds_table(stack, "songs", "songs_elsewhere")
    try:
        run = stack.run_and_wait("h")
    finally:
        _rename_rds_table(stack, "songs_elsewhere", "songs")
    run_id = run["dag_run_id"]
    extracts = [ti for ti in airflow.task_instances(run_id) if ti["task_id"] == "extract"]
    tries = sorted((ti["state"], ti["try_number"]) for ti in extracts)
    assert (run["state"], tries) == ("failed", [("failed", 1), ("success", 1)]), airflow.explain(
        run_id
    )
    (failed,) = [ti for ti in extracts if ti["state"] == "failed"]
    log = airflow.task_log(run_id, "extract", 1, failed["map_index"])
    assert "has no table 'songs'" in log, log[-3000:]
    assert "not retried" in log, log[-3000:]
    assert (stack.ledger(), stack.builds()) == (ledger, builds)


def _rename_rds_table(stack: Stack, table: str, to: str) -> None:
    with rds.connect(stack.settings) as conn, conn.cursor() as cur:
        cur.execute(f"alter table {table} rename to {to}")
        conn.commit()


# -- g -------------------------------------------------------------------------------------------
BUILD_TIMEOUT = 90  # seconds: the producer's execution_timeout in g (a green build takes ~40)
TASK_TIMEOUT = int(DAG_ENV["MUSIC_ELT_TASK_TIMEOUT_SECONDS"])


def _seconds(delta: dict[str, int] | None) -> float | None:
    """A TimeDelta of the REST API ({days, seconds, microseconds}) in seconds."""
    if delta is None:
        return None
    return delta["days"] * 86400 + delta["seconds"] + delta["microseconds"] / 1e6


@pytest.fixture
def pg_stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A second Airflow, on a PostgreSQL warehouse (pgserver), no retries, the producer's
    execution_timeout BUILD_TIMEOUT seconds."""
    with ExitStack() as stop:
        airflow = stop.enter_context(airflow_instance(tmp_path / "airflow"))  # migrates meanwhile:
        dbt_manifest: Path = request.getfixturevalue("dbt_manifest")
        db: dict[str, Any] = request.getfixturevalue("pg_database")
        workdir = tmp_path / "work"
        settings = postgres_settings(Settings.from_env({}, workdir=workdir), db)
        url, alerts = stop.enter_context(webhook_server())
        stop.callback(_stop_embedded_rds, settings)
        data, files = _prepare(tmp_path, settings)
        airflow.start(
            {
                **DAG_ENV,
                "MUSIC_ELT_TARGET": "postgres",
                **postgres_conn_env(db),
                "MUSIC_ELT_TASK_RETRIES": "0",
                "MUSIC_ELT_BUILD_TIMEOUT_SECONDS": str(BUILD_TIMEOUT),
                "MUSIC_ELT_WORKDIR": str(workdir),
                "MUSIC_ELT_DBT_MANIFEST": str(dbt_manifest),
                **_slack_env(url),
            }
        )
        yield Stack(airflow, data, workdir, settings, files, alerts, files[:FIRST_FILES])


def test_hung_build_times_out_alerts_and_frees_its_slot(pg_stack: Stack) -> None:
    """On PostgreSQL, the test holds an ACCESS EXCLUSIVE lock on raw_streams.streams once the
    loads are done: dbt waits on it. The producer ends on its execution_timeout
    (MUSIC_ELT_BUILD_TIMEOUT_SECONDS: it ran at most a minute longer), the Slack alert fires,
    its pool slot is freed and its session leaves PostgreSQL; once the lock is released a new
    run succeeds. The test waits for states and events (loads done, run ended, alert received,
    no session waiting), each within a bound far above what it takes on a loaded machine."""
    airflow, settings, alerts = pg_stack.airflow, pg_stack.settings, pg_stack.alerts
    w = settings.warehouse
    pg_database = {"host": w.host, "port": w.port, "user": w.user, "dbname": w.dbname}
    with ExitStack() as stop:
        timeouts = {t: airflow.task(t)["execution_timeout"] for t in (PRODUCER, "load", "archive")}
        assert {t: _seconds(v) for t, v in timeouts.items()} == {
            PRODUCER: BUILD_TIMEOUT,
            "load": TASK_TIMEOUT,
            "archive": TASK_TIMEOUT,
        }, f"execution_timeout from MUSIC_ELT_BUILD/TASK_TIMEOUT_SECONDS: {timeouts}"

        run = airflow.trigger()
        run_id = run["dag_run_id"]

        def loads_over() -> list[str] | None:
            loads = airflow.task_states(run_id).get("load", [])
            over = loads and all(state in ("success", *TRY_OVER) for state in loads)
            return loads if over else None

        loads = airflow.wait_until(loads_over, RUN_TIMEOUT, "the loads did not end", run_id=run_id)
        assert set(loads) == {"success"}, airflow.explain(run_id)
        # the loads have committed; the producer starts after them and blocks on its first
        # read of the raw streams
        locker = psycopg2.connect(pg_dsn(pg_database))
        stop.callback(locker.close)
        with locker.cursor() as cur:
            cur.execute("lock table raw_streams.streams in access exclusive mode")
        final = airflow.wait_for_run(run_id, RUN_TIMEOUT)
        states = airflow.task_states(run_id)
        producer = airflow.task_instance(run_id, PRODUCER)
        log = airflow.task_log(run_id, PRODUCER, producer["try_number"])
        assert (final["state"], producer["state"]) == ("failed", "failed"), airflow.explain(run_id)
        assert producer["duration"] is not None and producer["duration"] < BUILD_TIMEOUT + 60, (
            f"the producer ran {producer['duration']}s, past its execution_timeout "
            f"({BUILD_TIMEOUT}s): a timed-out build must stop its dbt queries, not wait for them"
        )
        assert "Timeout" in log or "timed out" in log, log[-3000:]
        for task_id in ("archive", "publish"):
            assert states[task_id] == ["upstream_failed"], (task_id, states)

        def producer_alert() -> bool:
            return any(f"task {PRODUCER} failed" in body.get("text", "") for _p, body in alerts)

        try:
            airflow.wait_until(producer_alert, 120, "no alert for the producer", run_id=run_id)
        except AirflowError:
            raise AssertionError([body.get("text", "") for _path, body in alerts]) from None
        pool = airflow.pool("default_pool")
        assert pool["running_slots"] == pool["queued_slots"] == 0, pool
        waiting = _lock_waiters(pg_database)
        assert waiting == [], f"dbt sessions still wait on the lock after the timeout: {waiting}"

        locker.rollback()  # releases the lock
        run2 = airflow.trigger()
        final2 = airflow.wait_for_run(run2["dag_run_id"], RUN_TIMEOUT)
        assert final2["state"] == "success", airflow.explain(run2["dag_run_id"])
        assert_marts_match_reference(published_marts(settings), pg_stack.data, pg_stack.delivered)


def _lock_waiters(db: dict[str, Any], wait: float = 60) -> list[tuple[Any, ...]]:
    """Sessions of database ``db`` waiting on a lock, after up to ``wait`` seconds for them to
    go (a connection of its own: pg_stat_activity is a snapshot per transaction)."""
    deadline = time.monotonic() + wait
    conn = psycopg2.connect(pg_dsn(db))
    conn.autocommit = True
    try:
        while True:
            with conn.cursor() as cur:
                cur.execute(
                    "select pid, application_name, left(query, 120) from pg_stat_activity "
                    "where datname = %s and wait_event_type = 'Lock'",
                    (db["dbname"],),
                )
                rows = cur.fetchall()
            if not rows or time.monotonic() > deadline:
                return list(rows)
            time.sleep(0.5)
    finally:
        conn.close()
