"""Airflow's LocalExecutor, but every task runs as if on a machine of its own.

The deploy test copies this file alone into a folder on the Airflow processes' PYTHONPATH (the
repository is not on it) and names ``shared_nothing_executor.SharedNothingExecutor`` as the
executor. While the file ``$MUSIC_ELT_SHARED_NOTHING_ROOT/on`` exists, each task process starts
in a new empty folder ``$MUSIC_ELT_SHARED_NOTHING_ROOT/task-*`` that is its working directory,
its ``MUSIC_ELT_WORKDIR``, its temporary directory (``TMPDIR``) and holds its Cosmos cache, as
separate Celery or Kubernetes workers would have; the folder's ``TASK`` file names the task.
The task process is a fork of the executor's worker, itself a fork of the scheduler: Cosmos,
which the scheduler imported (its provider info) and which reads its settings (the cache
folder) from the environment at import, is dropped from the worker's modules before each task,
so the task imports it again under its own environment, as a machine of its own would.
Without the file the executor is the LocalExecutor. What a task finds in its folder is only
what that task wrote.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from airflow.executors import local_executor
from airflow.executors.base_executor import BaseExecutor
from airflow.executors.local_executor import LocalExecutor

ROOT_VARIABLE = "MUSIC_ELT_SHARED_NOTHING_ROOT"
_RUN_WORKER = local_executor._run_worker  # the LocalExecutor's worker loop


def _machine_env(machine: Path) -> dict[str, str]:
    return {
        "MUSIC_ELT_WORKDIR": str(machine / "work"),
        "TMPDIR": str(machine / "tmp"),
        "AIRFLOW__COSMOS__CACHE_DIR": str(machine / "cosmos-cache"),
        "HOME": str(machine / "home"),
    }


def _run_on_a_machine_of_its_own(workload: Any, **kwargs: Any) -> int:
    root = Path(os.environ[ROOT_VARIABLE])
    if not (root / "on").exists():
        return BaseExecutor.run_workload(workload, **kwargs)
    machine = Path(tempfile.mkdtemp(prefix="task-", dir=root))
    env = _machine_env(machine)
    for name in ("work", "tmp", "home"):
        (machine / name).mkdir()
    ti = getattr(workload, "ti", None)
    name = f"{ti.task_id}[{ti.map_index}]" if ti is not None else str(workload.display_name)
    (machine / "TASK").write_text(name, encoding="utf-8")
    saved = {name: os.environ.get(name) for name in env}
    cwd = os.getcwd()
    os.environ.update(env)
    tempfile.tempdir = None  # the task process (a fork of this one) computes it again
    os.chdir(machine / "work")
    for module in [m for m in sys.modules if m == "cosmos" or m.startswith("cosmos.")]:
        del sys.modules[module]  # the forked task imports it again, under its environment
    try:
        return BaseExecutor.run_workload(workload, **kwargs)
    finally:
        os.chdir(cwd)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        tempfile.tempdir = None


def _worker(**kwargs: Any) -> None:
    """A LocalExecutor worker (a forked process) whose tasks run through the function above."""
    isolating = type("Isolating", (), {"run_workload": staticmethod(_run_on_a_machine_of_its_own)})
    local_executor.BaseExecutor = isolating  # type: ignore[assignment,misc]  # here only
    _RUN_WORKER(**kwargs)


class SharedNothingExecutor(LocalExecutor):
    """LocalExecutor whose worker processes run each task in a folder of its own."""

    def _spawn_worker(self) -> None:
        local_executor._run_worker = _worker  # type: ignore[assignment]  # what workers run
        try:
            super()._spawn_worker()
        finally:
            local_executor._run_worker = _RUN_WORKER
