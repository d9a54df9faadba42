"""The deployable bundle, installed and run the way a user deploys it.

``make bundle TARGET=postgres`` builds the bundle; its ``requirements.txt`` (with its
``constraints.txt`` and wheel) is installed into a new virtual environment, offline through uv,
and that environment's Airflow (scheduler, dag-processor, triggerer, API server:
tests/dags/scheduler.py) runs the bundle's DAG folder. No repository checkout is on any path:
the DAG imports the installed package and finds the dbt project and its manifest beside itself.
Every secret and endpoint comes from an Airflow connection: the RDS (``aws_rds_connection``, a
pgserver database), S3 (``aws_conn``, moto's server) and the warehouse (``postgres_conn``,
another pgserver database).

One Airflow, two runs, each checked against tests/kpi_reference.py:

- deploy: a first run on the first stream files;
- shared nothing: the remaining files, every task in its own empty work directory, temporary
  directory and Cosmos cache (tests/deploy/shared_nothing_executor.py), as separate workers
  have: landing on S3, the warehouse and the run lock on PostgreSQL, dbt's results through
  XCom and the warehouse. Nothing a task writes on its disk is read by another.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest

from loaders.config import Settings
from loaders.demo.generate import generate
from loaders.demo.seed import seed_table
from tests.conftest import (
    PG_TEST_PASSWORD,
    REPO,
    new_database,
    pg_dsn,
    postgres_conn_env,
    postgres_settings,
)
from tests.dags.helpers import assert_marts_match_reference, read_marts
from tests.dags.scheduler import Airflow, airflow_instance

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
BUCKET_PREFIX = "music"
FIRST_FILES = 7  # of the generated stream files: the deploy run; the rest: shared nothing
RUN_TIMEOUT = 480  # seconds for one run of a few thousand plays on a busy 2-core machine
AWS_SECRET = f"deploy-test-secret-{uuid.uuid4().hex[:8]}"  # must appear in no task log
DAG_ENV = {
    "MUSIC_ELT_TARGET": "postgres",
    "MUSIC_ELT_SCHEDULE": "",
    "MUSIC_ELT_TASK_RETRIES": "0",
    "MUSIC_ELT_LOCK_WAIT_SECONDS": "30",
    "MUSIC_ELT_RDS_WAIT_SECONDS": "20",
    "MUSIC_ELT_TASK_TIMEOUT_SECONDS": "300",
    "MUSIC_ELT_BUILD_TIMEOUT_SECONDS": "600",
}


@dataclass
class Deployment:
    bundle: Path
    venv: Path
    airflow: Airflow
    machines: Path  # the shared-nothing executor's task folders
    data: Path
    files: list[Path]
    bucket: str
    s3: Any
    warehouse: Settings

    def deliver(self, files: list[Path]) -> None:
        for path in files:
            key = f"{BUCKET_PREFIX}/streams/{path.name}"
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes())

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{BUCKET_PREFIX}/{prefix}"
        )
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def run(self) -> tuple[dict[str, Any], dict[str, list[str]]]:
        run = self.airflow.trigger()
        final = self.airflow.wait_for_run(run["dag_run_id"], RUN_TIMEOUT)
        return final, self.airflow.task_states(run["dag_run_id"])


def build_bundle(out: Path) -> Path:
    """``make bundle TARGET=postgres`` into ``out`` (the repository's venv is taken as is)."""
    result = subprocess.run(
        [
            *("make", "--no-print-directory", "-o", ".venv/.installed-core", "bundle"),
            *("TARGET=postgres", f"BUNDLE_DIR={out}"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"make bundle failed:\n{result.stdout}\n{result.stderr}"
    return out


def install(bundle: Path, venv: Path) -> None:
    """A new virtual environment with the bundle's requirements.txt, as a platform installs it
    (offline: uv's cache holds every pinned distribution)."""
    uv = Path(sys.executable).parent / "uv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["UV_OFFLINE"] = "1"
    for command in (
        [str(uv), "venv", "--quiet", "--python", sys.executable, str(venv)],
        [
            *(str(uv), "pip", "install", "--quiet", "--compile-bytecode"),
            *("--python", str(venv / "bin" / "python")),
            *("--excludes", str(bundle / "excludes.txt"), "-r", str(bundle / "requirements.txt")),
        ],
    ):
        result = subprocess.run(
            command, cwd=venv.parent, env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"


def _seed_rds(db: dict[str, Any], data: Path) -> None:
    conn = psycopg2.connect(pg_dsn(db))
    try:
        for table in ("users", "songs"):
            seed_table(conn, table, data / f"{table}.csv")
        conn.commit()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, pg_server: Any, s3_endpoint: str
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deploy")
    bundle = build_bundle(root / "bundle")
    venv = root / "venv"
    install(bundle, venv)
    machines = root / "machines"
    machines.mkdir()
    executor_path = root / "executor"  # the test's executor alone, not the repository
    executor_path.mkdir()
    shutil.copy(HERE / "shared_nothing_executor.py", executor_path)

    with ExitStack() as stop:
        airflow = stop.enter_context(
            airflow_instance(root / "airflow", dags=bundle / "dags", bin_dir=venv / "bin")
        )
        for name in list(airflow.env):
            if name.startswith(("AWS_", "PYTHON", "VIRTUAL_ENV", "PG")):
                del airflow.env[name]
        airflow.env.update(
            {
                "PYTHONPATH": str(executor_path),
                "AIRFLOW__CORE__EXECUTOR": "shared_nothing_executor.SharedNothingExecutor",
                "MUSIC_ELT_SHARED_NOTHING_ROOT": str(machines),
            }
        )
        data = root / "data"
        generate(data, streams=3000, days=2, seed=23)
        files = sorted((data / "streams").iterdir())
        rds_db, warehouse_db = new_database(pg_server), new_database(pg_server)
        _seed_rds(rds_db, data)
        bucket = f"deploy-{uuid.uuid4().hex[:10]}"
        s3 = boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            aws_access_key_id="deploy-test",
            aws_secret_access_key=AWS_SECRET,
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket=bucket)
        aws_conn = {
            "conn_type": "aws",
            "login": "deploy-test",
            "password": AWS_SECRET,
            "extra": {"region_name": "us-east-1", "endpoint_url": s3_endpoint},
        }
        airflow.start(
            {
                **DAG_ENV,
                "MUSIC_ELT_LANDING": f"s3://{bucket}/{BUCKET_PREFIX}",
                "AIRFLOW_CONN_AWS_CONN": json.dumps(aws_conn),
                **postgres_conn_env(rds_db, "aws_rds_connection"),
                **postgres_conn_env(warehouse_db),
            }
        )
        warehouse = postgres_settings(Settings.from_env({}, workdir=root / "reader"), warehouse_db)
        yield Deployment(bundle, venv, airflow, machines, data, files, bucket, s3, warehouse)


def test_deployed_bundle_runs_then_runs_with_shared_nothing(
    deployment: Deployment, subtests: pytest.Subtests
) -> None:
    with subtests.test("bundle: a PostgreSQL manifest; the package from site-packages only"):
        _bundle_is_what_the_target_needs(deployment)
    with subtests.test("deploy: the installed bundle's DAG builds and publishes the marts"):
        _deploy_run(deployment)
    with subtests.test("shared nothing: every task on a disk of its own, the marts still right"):
        _shared_nothing_run(deployment)


def _bundle_is_what_the_target_needs(deployment: Deployment) -> None:
    """The bundle carries a PostgreSQL manifest, and the environment installed from it imports
    the package from its own site-packages, not from a checkout."""
    bundle = deployment.bundle
    assert json.loads((bundle / "bundle.json").read_text())["adapter_type"] == "postgres"
    manifest = bundle / "dags" / "dbt_project" / "target" / "airflow" / "manifest.json"
    assert json.loads(manifest.read_text())["metadata"]["adapter_type"] == "postgres"
    probe = subprocess.run(
        [
            str(deployment.venv / "bin" / "python"),
            "-c",
            "import loaders, music_elt_airflow, sys; "
            "print(loaders.__file__); print(music_elt_airflow.__file__); print(sys.path)",
        ],
        cwd=deployment.venv,
        env={"PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        check=True,
    )
    site = str(deployment.venv / "lib")
    loaders_file, airflow_glue, path = probe.stdout.splitlines()
    assert loaders_file.startswith(site) and airflow_glue.startswith(site), probe.stdout
    assert str(REPO) not in path, path


def _task_log_text(home: Path) -> str:
    return "\n".join(
        path.read_text(encoding="utf-8", errors="replace")
        for path in (home / "logs").rglob("*")
        if path.is_file()
    )


def _deploy_run(deployment: Deployment) -> None:
    first = deployment.files[:FIRST_FILES]
    deployment.deliver(first)
    final, states = deployment.run()
    assert final["state"] == "success", deployment.airflow.explain(final["dag_run_id"])
    assert all(s == "success" for task in states.values() for s in task), states
    assert deployment.keys("streams/") == []
    archived = {key.rsplit("/", 1)[-1] for key in deployment.keys("archive/streams/")}
    assert archived == {p.name for p in first}
    assert_marts_match_reference(read_marts(deployment.warehouse), deployment.data, first)
    logs = _task_log_text(deployment.airflow.home)
    for secret in (AWS_SECRET, PG_TEST_PASSWORD):
        assert secret not in logs, "a connection's password is in a task log"


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def _shared_nothing_run(deployment: Deployment) -> None:
    shared = {  # what every task could write to if it shared a disk with the others
        "bundle": deployment.bundle,
        "the Airflow home's Cosmos cache": deployment.airflow.home / "cosmos-cache",
    }
    before = {name: _snapshot(folder) for name, folder in shared.items()}
    (deployment.machines / "on").touch()
    deployment.deliver(deployment.files[FIRST_FILES:])
    try:
        final, states = deployment.run()
    finally:
        (deployment.machines / "on").unlink()
    run_id = final["dag_run_id"]
    assert final["state"] == "success", deployment.airflow.explain(run_id)
    assert all(s == "success" for task in states.values() for s in task), states

    ran = [ti for ti in deployment.airflow.task_instances(run_id) if ti["try_number"] >= 1]
    machines = sorted(p for p in deployment.machines.iterdir() if p.name.startswith("task-"))
    assert len(machines) == len(ran), (
        f"{len(ran)} tasks ran but {len(machines)} task folders were made: a task ran outside "
        "the shared-nothing executor"
    )
    for name, folder in shared.items():
        assert _snapshot(folder) == before[name], f"a task wrote to {name} ({folder})"
    wrote = {
        (m / "TASK").read_text(): sorted(str(p.relative_to(m)) for p in (m / "work").rglob("*"))
        for m in machines
    }
    assert not any(wrote.values()), f"tasks left files in their work directory: {wrote}"

    assert deployment.keys("streams/") == []
    archived = {key.rsplit("/", 1)[-1] for key in deployment.keys("archive/streams/")}
    assert archived == {p.name for p in deployment.files}
    assert_marts_match_reference(
        read_marts(deployment.warehouse), deployment.data, deployment.files
    )
