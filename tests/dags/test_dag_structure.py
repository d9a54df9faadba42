"""The DAG folder parses cleanly and the DAG has the shape the pipeline needs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.dags.helpers import DAG_ID, DAGS, POOL, load_dag

PLAIN_TASKS = {
    "check_rds_available",
    "extract",
    "plan",
    "should_run",
    "load",
    "loaded",
    "archive",
    "publish",
}
PRODUCER = "dbt.dbt_producer_watcher"


def _manifest_nodes(manifest: Path, resource_type: str) -> dict[str, dict[str, Any]]:
    nodes = json.loads(manifest.read_text())["nodes"]
    return {
        node["name"]: node
        for node in nodes.values()
        if node["resource_type"] == resource_type and node["package_name"] == "music_elt"
    }


def _dbt_task(dag: Any, name: str, kind: str) -> Any:
    """Cosmos names a node's task ``dbt.<name>.<kind>`` (in the model's group, when the model
    has tests) or ``dbt.<name>_<kind>``."""
    for task_id in (f"dbt.{name}.{kind}", f"dbt.{name}_{kind}"):
        if task_id in dag.task_dict:
            return dag.task_dict[task_id]
    raise AssertionError(f"no {kind} task for dbt node {name}")


def _ancestors(dag: Any, task_id: str) -> set[str]:
    seen: set[str] = set()
    todo = [task_id]
    while todo:
        for upstream in dag.task_dict[todo.pop()].upstream_task_ids:
            if upstream not in seen:
                seen.add(upstream)
                todo.append(upstream)
    return seen


def test_dag_folder_imports_without_errors(dag_env: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert list(bag.dag_ids) == [DAG_ID]


def test_missing_manifest_is_a_clear_import_error(
    dag_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("MUSIC_ELT_DBT_MANIFEST", str(tmp_path / "nowhere" / "manifest.json"))
    errors = DagBag(dag_folder=str(DAGS)).import_errors
    assert len(errors) == 1
    assert "make manifest" in next(iter(errors.values()))


def test_parsing_never_runs_dbt(dag_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cosmos.constants import LoadMode
    from cosmos.dbt.graph import DbtGraph

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the DAG ran dbt while being parsed")

    monkeypatch.setattr(DbtGraph, "load_via_dbt_ls", forbidden)
    monkeypatch.setattr(DbtGraph, "run_dbt_deps", forbidden)
    dag = load_dag()
    group = dag.task_group.children["dbt"]
    assert group.dbt_graph.load_method == LoadMode.DBT_MANIFEST


def test_tasks_and_dependencies(pipeline_dag: Any) -> None:
    dag = pipeline_dag
    ids = set(dag.task_dict)
    assert ids >= PLAIN_TASKS
    assert all(task_id.startswith("dbt.") for task_id in ids - PLAIN_TASKS)

    def upstream(task_id: str) -> set[str]:
        return set(dag.task_dict[task_id].upstream_task_ids)

    assert upstream("check_rds_available") == set()
    assert upstream("extract") == {"check_rds_available"}
    assert upstream("plan") == {"extract"}
    assert upstream("should_run") == {"plan"}
    assert upstream("load") == {"plan", "should_run"}
    assert upstream("loaded") == {"load"}
    assert upstream("publish") == {"archive"}
    # nothing to do: should_run skips every task after it, whatever their trigger rules
    assert dag.task_dict["should_run"].ignore_downstream_trigger_rules

    # one dbt build (the watcher producer) starts after the loads; every model's task
    # reads its result after it, so none can wait on a build that has not started
    dbt_ids = {task_id for task_id in ids if task_id.startswith("dbt.")}
    roots = {task_id for task_id in dbt_ids if not upstream(task_id) & dbt_ids}
    assert roots == {PRODUCER} and upstream(PRODUCER) == {"loaded"}
    assert dbt_ids - {PRODUCER} <= _descendants(dag, PRODUCER)
    # archiving and publishing wait for the build and the loads' summary; the model tasks only
    # report the build (they read XCom), beside them
    assert upstream("archive") == {"plan", "loaded", PRODUCER}
    assert _ancestors(dag, "publish") & dbt_ids == {PRODUCER}

    extract = dag.task_dict["extract"]._get_specified_expand_input().value
    assert extract == {"table": ["users", "songs"]}
    load = dag.task_dict["load"]._get_specified_expand_input().value
    assert load["group"].operator.task_id == "plan"  # the plan's load groups


def _descendants(dag: Any, task_id: str) -> set[str]:
    seen: set[str] = set()
    todo = [task_id]
    while todo:
        for downstream in dag.task_dict[todo.pop()].downstream_task_ids:
            if downstream not in seen:
                seen.add(downstream)
                todo.append(downstream)
    return seen


def test_one_watcher_task_per_dbt_model(pipeline_dag: Any, dbt_manifest: Path) -> None:
    from cosmos.operators.watcher import DbtRunWatcherOperator, DbtTestWatcherOperator

    assert not [t for t in pipeline_dag.tasks if isinstance(t, DbtTestWatcherOperator)]

    models = _manifest_nodes(dbt_manifest, "model")
    runs = [t for t in pipeline_dag.tasks if isinstance(t, DbtRunWatcherOperator)]
    built = [m for m in models.values() if m["config"]["materialized"] != "ephemeral"]
    assert len(runs) == len(built)
    for node in built:
        run = _dbt_task(pipeline_dag, node["name"], "run")
        assert isinstance(run, DbtRunWatcherOperator)
        # its tests' results in the same task (a task each would cost a worker process)
        with pytest.raises(AssertionError, match="no test task"):
            _dbt_task(pipeline_dag, node["name"], "test")
        # lineage: a model's task comes after the tasks of the models it reads
        for parent in node["depends_on"]["nodes"]:
            if parent.startswith("model.") and parent.split(".")[-1] in models:
                assert _dbt_task(pipeline_dag, parent.split(".")[-1], "run").task_id in _ancestors(
                    pipeline_dag, run.task_id
                )


def test_retries_pools_and_run_limits(
    dag_env: Path, monkeypatch: pytest.MonkeyPatch, dbt_manifest: Path
) -> None:
    from cosmos.operators._watcher.base import BaseConsumerSensor

    monkeypatch.delenv("MUSIC_ELT_TASK_RETRIES")  # the production default
    dag = load_dag()
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    tasks = dag.task_dict
    for task_id in ("extract", "load", "plan", "archive"):
        assert tasks[task_id].retries >= 1 and tasks[task_id].retry_exponential_backoff
    producer = tasks[PRODUCER]
    sensors = [t for t in dag.tasks if isinstance(t, BaseConsumerSensor)]
    # a retried producer or sensor would run dbt a second time: neither retries
    assert producer.retries == 0 and sensors and all(t.retries == 0 for t in sensors)
    assert all(not t.deferrable for t in sensors)
    # every task that touches the DuckDB file shares the pool of one slot; the model tasks
    # read the producer's XCom only, and report side by side
    writers = [producer, *(tasks[t] for t in ("plan", "load", "archive", "publish"))]
    assert all(t.pool == POOL for t in writers)
    assert all(t.pool == "default_pool" for t in sensors)
    assert tasks["check_rds_available"].retries == 0
    # every task has a timeout: a hung build fails, alerts and frees the pool
    assert all(t.execution_timeout is not None for t in dag.tasks)
    assert tasks["load"].execution_timeout.total_seconds() == 1800  # the documented defaults
    assert producer.execution_timeout.total_seconds() == 7200
    assert all(t.execution_timeout == producer.execution_timeout for t in sensors)
    # dbt runs in-process, against an absolute DuckDB path, without dbt deps
    assert Path(producer.env["MUSIC_ELT_DUCKDB_PATH"]).is_absolute()
    # and with the loaders' DuckDB memory settings, spilling inside the work directory
    assert producer.env["MUSIC_ELT_DUCKDB_MEMORY_LIMIT"] == "3GB"
    assert Path(producer.env["MUSIC_ELT_DUCKDB_TEMP_DIR"]).is_absolute()
    assert producer.install_deps is False
    assert producer.emit_datasets is False


def test_kpi_assets_come_from_the_manifest(pipeline_dag: Any, dbt_manifest: Path) -> None:
    tagged = {
        name
        for name, node in _manifest_nodes(dbt_manifest, "model").items()
        if "kpi" in node["tags"]
    }
    assert tagged == {"fct_genre_kpis_daily", "fct_listening_kpis_hourly", "fct_top_artists_hourly"}
    outlets = pipeline_dag.task_dict["publish"].outlets
    assert {asset.name for asset in outlets} == {f"music_elt.marts.{m}" for m in tagged}
    assert all(asset.uri.startswith("x-music-elt://warehouse/marts/") for asset in outlets)


def test_every_task_alerts_on_failure(pipeline_dag: Any) -> None:
    from airflow.sdk import BaseNotifier

    for task in pipeline_dag.tasks:
        callbacks = task.on_failure_callback
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        assert any(isinstance(cb, BaseNotifier) for cb in callbacks), task.task_id


def test_every_task_logs_its_peak_rss(pipeline_dag: Any, caplog: pytest.LogCaptureFixture) -> None:
    from music_elt_airflow import runtime

    for task in pipeline_dag.tasks:  # Airflow calls both in the task's own process
        assert runtime.reset_peak_rss in task.on_execute_callback, task.task_id
        assert runtime.log_peak_rss in task.on_success_callback, task.task_id
    with caplog.at_level("INFO", logger="music_elt.runtime"):
        runtime.reset_peak_rss({})
        runtime.log_peak_rss({})
    assert re.fullmatch(r"peak RSS of this task: \d+\.\d\d GB", caplog.messages[-1])


def test_the_dag_file_is_wiring_only() -> None:
    source = (DAGS / "music_streaming_pipeline.py").read_text()
    assert len(source.splitlines()) <= 160
    for plumbing in ("urllib", "import re", "os.environ", "select ", "insert into"):
        assert plumbing not in source
