"""The DAG folder parses cleanly and the DAG has the shape the pipeline needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.dags.helpers import DAG_ID, DAGS, POOL, load_dag

PLAIN_TASKS = {
    "check_rds_available",
    "extract_rds_table",
    "detect_new_work",
    "has_new_work",
    "load_raw",
    "collect_loads",
    "record_build",
    "archive_stream_files",
    "publish_kpi_assets",
}
KPI_MARTS = ("fct_genre_kpis_daily", "fct_listening_kpis_hourly", "fct_top_artists_hourly")


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
    assert upstream("extract_rds_table") == {"check_rds_available"}
    assert upstream("detect_new_work") == {"extract_rds_table"}
    assert upstream("has_new_work") == {"detect_new_work"}
    assert upstream("load_raw") == {"detect_new_work", "has_new_work"}
    assert upstream("collect_loads") == {"load_raw"}
    assert upstream("publish_kpi_assets") == {"record_build"}
    assert "record_build" in upstream("archive_stream_files")

    dbt_ids = {task_id for task_id in ids if task_id.startswith("dbt.")}
    roots = {task_id for task_id in dbt_ids if not upstream(task_id) & dbt_ids}
    assert roots and all(upstream(task_id) == {"collect_loads"} for task_id in roots)
    # archiving waits for every dbt task, and for the loads' summary
    assert dbt_ids | {"collect_loads", "record_build"} <= _ancestors(dag, "archive_stream_files")
    assert dbt_ids <= _ancestors(dag, "record_build")

    # mapped over the RDS tables and over the work found
    extract = dag.task_dict["extract_rds_table"]._get_specified_expand_input().value
    assert extract == {"table": ["users", "songs"]}
    load = dag.task_dict["load_raw"]._get_specified_expand_input().value
    assert load["group"].operator.task_id == "detect_new_work"
    assert dag.task_dict["has_new_work"].ignore_downstream_trigger_rules


def test_one_cosmos_task_per_dbt_model(pipeline_dag: Any, dbt_manifest: Path) -> None:
    from cosmos.operators.local import DbtRunLocalOperator, DbtTestLocalOperator

    models = _manifest_nodes(dbt_manifest, "model")
    assert set(KPI_MARTS) <= set(models)
    run_tasks = [t for t in pipeline_dag.tasks if isinstance(t, DbtRunLocalOperator)]
    assert len(run_tasks) == len(
        [m for m in models.values() if m["config"]["materialized"] != "ephemeral"]
    )
    tests_by_model: dict[str, int] = {}
    for test in _manifest_nodes(dbt_manifest, "test").values():
        parents = [d for d in test["depends_on"]["nodes"] if d.startswith("model.")]
        if len(parents) == 1:
            name = parents[0].split(".")[-1]
            tests_by_model[name] = tests_by_model.get(name, 0) + 1
    for name, node in models.items():
        if node["config"]["materialized"] == "ephemeral":
            continue
        run = _dbt_task(pipeline_dag, name, "run")
        assert isinstance(run, DbtRunLocalOperator)
        if tests_by_model.get(name):  # its tests run right after it, in their own task
            test = _dbt_task(pipeline_dag, name, "test")
            assert isinstance(test, DbtTestLocalOperator)
            assert run.task_id in test.upstream_task_ids


def test_tests_with_two_parents_wait_for_both(pipeline_dag: Any, dbt_manifest: Path) -> None:
    tests = _manifest_nodes(dbt_manifest, "test")
    multi = {
        name: [d.split(".")[-1] for d in node["depends_on"]["nodes"] if d.startswith("model.")]
        for name, node in tests.items()
    }
    multi = {name: parents for name, parents in multi.items() if len(parents) > 1}
    assert multi, "the project has relationship tests between models"
    for name, parents in multi.items():
        task = _dbt_task(pipeline_dag, name, "test")
        ancestors = _ancestors(pipeline_dag, task.task_id)
        for parent in parents:
            assert _dbt_task(pipeline_dag, parent, "run").task_id in ancestors, (name, parent)


def test_retries_pools_and_run_limits(
    dag_env: Path, monkeypatch: pytest.MonkeyPatch, dbt_manifest: Path
) -> None:
    from cosmos.operators.local import DbtRunLocalOperator, DbtTestLocalOperator

    monkeypatch.delenv("MUSIC_ELT_TASK_RETRIES")  # the production default
    dag = load_dag()
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    tasks = dag.task_dict
    for task_id in ("extract_rds_table", "load_raw", "detect_new_work"):
        assert tasks[task_id].retries >= 1 and tasks[task_id].retry_exponential_backoff
    runs = [t for t in dag.tasks if isinstance(t, DbtRunLocalOperator)]
    tests = [t for t in dag.tasks if isinstance(t, DbtTestLocalOperator)]
    assert runs and all(t.retries >= 1 and t.retry_exponential_backoff for t in runs)
    assert tests and all(t.retries == 0 for t in tests)
    # every task that writes the DuckDB file shares the pool of one slot
    writers = [*runs, *tests, *(tasks[t] for t in ("detect_new_work", "load_raw", "record_build"))]
    assert all(t.pool == POOL for t in writers)
    assert tasks["check_rds_available"].retries == 0
    assert tasks["check_rds_available"].execution_timeout is not None
    # the dbt tasks run dbt in-process, against an absolute DuckDB path, without dbt deps
    for task in runs:
        assert Path(task.env["MUSIC_ELT_DUCKDB_PATH"]).is_absolute()
        assert task.install_deps is False
        assert task.emit_datasets is False


def test_kpi_assets_are_published(pipeline_dag: Any) -> None:
    outlets = pipeline_dag.task_dict["publish_kpi_assets"].outlets
    assert {asset.name for asset in outlets} == {f"music_elt.marts.{m}" for m in KPI_MARTS}
    assert all(asset.uri.startswith("x-music-elt://") for asset in outlets)


def test_every_task_alerts_on_failure(pipeline_dag: Any) -> None:
    from airflow.sdk import BaseNotifier

    for task in pipeline_dag.tasks:
        callbacks = task.on_failure_callback
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        assert any(isinstance(cb, BaseNotifier) for cb in callbacks), task.task_id
