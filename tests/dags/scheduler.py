"""A real Airflow 3 for the DAG tests: scheduler, dag-processor, triggerer and API server
(LocalExecutor, SQLite metadata DB) in a temporary AIRFLOW_HOME, and a small client of its REST
API (``/api/v2``), the way a user drives the DAG from the UI.

No Airflow import here: Airflow runs in its own processes, with the environment the DAG reads
at parse time. Every process is started in a new session and stopped, with its children (the
task processes), when the ``with`` block ends; a failed check can print what the scheduler and
the failing task logged (:meth:`Airflow.explain`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.dags.helpers import DAG_ID, DAGS, POOL

BIN = Path(sys.executable).parent
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
TERMINAL = ("success", "failed")
USER, PASSWORD = "admin", "admin"


class AirflowError(AssertionError):
    """Airflow did not start, an API call failed, or a run did not end in time."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow_env(home: Path, port: int, *, dags: Path = DAGS, bin_dir: Path = BIN) -> dict[str, str]:
    """The environment of every Airflow process: this process's, without any AIRFLOW_*,
    MUSIC_ELT_*, WAREHOUSE_* setting it may carry, then Airflow's configuration for a fast
    single-machine instance. ``dags`` and ``bin_dir`` (where ``airflow`` is) default to the
    repository's DAG folder and this virtual environment; a deployed bundle gives its own."""
    base = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AIRFLOW", "MUSIC_ELT_", "WAREHOUSE_", "PYTEST_"))
    }
    passwords = home / "passwords.json"
    return {
        **base,
        "PATH": f"{bin_dir}{os.pathsep}{base.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # the client unpauses it
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        # the DAG file is parsed once at start; the tests never change it
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "AIRFLOW__COSMOS__CACHE_DIR": str(home / "cosmos-cache"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        "DO_NOT_TRACK": "1",
    }


@dataclass
class Airflow:
    """A running Airflow: its home, environment, processes and REST client."""

    home: Path
    env: dict[str, str]
    port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _token: str | None = None
    bin_dir: Path = BIN  # where the airflow command is

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- processes -------------------------------------------------------------------------------
    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.home / f"{name}.log").open("ab")
        with log:
            return subprocess.Popen(
                [str(self.bin_dir / "airflow"), *args],
                env=self.env,
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, task processes included
            )

    def migrate(self) -> subprocess.Popen[bytes]:
        """Start ``airflow db migrate`` (about 15 s): wait for it with :meth:`start`."""
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps({USER: PASSWORD}) + "\n", encoding="utf-8")
        self.processes["migrate"] = self._spawn("migrate", "db", "migrate")
        return self.processes["migrate"]

    def start(self, dag_env: Mapping[str, str], timeout: float = 180) -> None:
        """Wait for the migration, start the four components with ``dag_env`` (what the DAG
        reads at parse time) added to their environment, wait until the API answers and the
        DAG is parsed without import errors; create the DuckDB pool; unpause the DAG."""
        deadline = time.monotonic() + timeout
        self.env.update(dag_env)
        migrate = self.processes.get("migrate") or self.migrate()
        if migrate.wait(timeout=timeout) != 0:
            raise AirflowError(f"airflow db migrate failed:\n{self.log_tail('migrate')}")
        for name in COMPONENTS:
            self.processes[name] = self._spawn(name, name)
        while True:
            self._check_alive()
            if self._answers() and (dag := self._dag_or_none()) is not None:
                break
            if time.monotonic() > deadline:
                raise AirflowError(f"Airflow not ready after {timeout:.0f}s\n{self.explain()}")
            time.sleep(0.5)
        errors = self.get("/api/v2/importErrors")["import_errors"]
        if errors:
            raise AirflowError(f"the DAG folder has import errors: {errors}")
        pool = {"slots": 1, "description": "one DuckDB writer at a time", "include_deferred": False}
        try:
            self.request("POST", "/api/v2/pools", {"name": POOL, **pool})
        except AirflowError as exc:  # a home started before (bench/dag_bench.py) has it
            if "HTTP 409" not in str(exc):
                raise
        if dag["is_paused"]:
            self.request("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})

    def stop(self) -> None:
        """SIGTERM every process group, then SIGKILL what is left (task processes too)."""
        import psutil

        procs = [p for p in self.processes.values() if p.poll() is None]
        family: list[psutil.Process] = []
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                family += psutil.Process(proc.pid).children(recursive=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for child in family:  # a task process that left its group
            with contextlib.suppress(psutil.Error):
                child.kill()

    def _check_alive(self) -> None:
        for name in COMPONENTS:
            proc = self.processes.get(name)
            if proc is not None and proc.poll() is not None:
                raise AirflowError(
                    f"airflow {name} exited with {proc.returncode}:\n{self.log_tail(name)}"
                )

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=2) as r:
                health = json.load(r)
        except (OSError, ValueError):
            return False
        return bool(health.get("scheduler", {}).get("status") == "healthy")

    def _dag_or_none(self) -> dict[str, Any] | None:
        try:
            return self.get(f"/api/v2/dags/{DAG_ID}")
        except AirflowError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise

    # -- REST ------------------------------------------------------------------------------------
    def _login(self) -> str:
        body = json.dumps({"username": USER, "password": PASSWORD}).encode()
        req = urllib.request.Request(
            f"{self.url}/auth/token",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as response:
            return str(json.load(response)["access_token"])

    def request(self, method: str, path: str, body: Any = None, retry_auth: bool = True) -> Any:
        """One call to the REST API as the admin user; the decoded JSON answer."""
        if self._token is None:
            self._token = self._login()
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 401 and retry_auth:
                self._token = None
                return self.request(method, path, body, retry_auth=False)
            detail = exc.read().decode(errors="replace")[:2000]
            raise AirflowError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        return json.loads(raw) if raw else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def trigger(self, conf: dict[str, Any] | None = None) -> dict[str, Any]:
        """A manual run of the DAG (logical date null, as the UI's trigger button)."""
        body = {"logical_date": None, "conf": conf or {}}
        run: dict[str, Any] = self.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", body)
        return run

    def dag_run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{_q(run_id)}")
        return run

    def wait_for_run(self, run_id: str, timeout: float = 300) -> dict[str, Any]:
        """Poll the run until it is success or failed; AirflowError (with the logs) after
        ``timeout`` seconds."""
        return self.wait_until(
            lambda: (run := self.dag_run(run_id))["state"] in TERMINAL and run,
            timeout,
            f"run {run_id} did not end",
            run_id=run_id,
            interval=1,
        )

    def wait_until(
        self,
        check: Callable[[], Any],
        timeout: float,
        what: str,
        *,
        run_id: str | None = None,
        interval: float = 0.5,
    ) -> Any:
        """Poll ``check`` until it returns something true (returned); AirflowError after
        ``timeout`` seconds, with the scheduler's log and the run's task logs."""
        deadline = time.monotonic() + timeout
        while True:
            if result := check():
                return result
            if time.monotonic() > deadline:
                raise AirflowError(f"{what} within {timeout:.0f}s\n{self.explain(run_id)}")
            self._check_alive()
            time.sleep(interval)

    def task_instances(self, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run (mapped ones one by one): task_id, map_index, state,
        try_number, ..."""
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{_q(run_id)}/taskInstances?limit=1000"
        tis: list[dict[str, Any]] = self.get(path)["task_instances"]
        return tis

    def task_states(self, run_id: str) -> dict[str, list[str]]:
        """State of each task of the run (one entry per mapped instance), as in helpers."""
        states: dict[str, list[str]] = {}
        for ti in sorted(self.task_instances(run_id), key=lambda t: (t["task_id"], t["map_index"])):
            states.setdefault(ti["task_id"], []).append(str(ti["state"]))
        return states

    def task_instance(self, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        for ti in self.task_instances(run_id):
            if ti["task_id"] == task_id and ti["map_index"] == map_index:
                return ti
        raise AirflowError(f"no task instance {task_id}[{map_index}] in run {run_id}")

    def clear_run(self, run_id: str, *, only_failed: bool = False) -> Any:
        """Clear a whole run (the UI's "Clear" on a run): its tasks run again."""
        body = {"dry_run": False, "only_failed": only_failed}
        return self.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns/{_q(run_id)}/clear", body)

    def clear_tasks(
        self,
        run_id: str,
        task_ids: list[str],
        *,
        include_downstream: bool = False,
        only_failed: bool = False,
    ) -> Any:
        """Clear chosen task instances of a run (the UI's "Clear" on a task)."""
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": task_ids,
            "include_downstream": include_downstream,
            "include_upstream": False,
            "only_failed": only_failed,
            "reset_dag_runs": True,
        }
        return self.request("POST", f"/api/v2/dags/{DAG_ID}/clearTaskInstances", body)

    def task_log(self, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """One try's log as text, one line per event."""
        path = (
            f"/api/v2/dags/{DAG_ID}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/logs/"
            f"{try_number}?full_content=true&map_index={map_index}"
        )
        content = self.get(path).get("content", [])
        lines = []
        for event in content:
            if isinstance(event, dict):
                text = str(event.get("event", ""))
                extra = {k: v for k, v in event.items() if k not in ("event", "timestamp")}
                lines.append(f"{text} {extra}" if extra.get("level") == "error" else text)
            else:
                lines.append(str(event))
        return "\n".join(lines)

    def task(self, task_id: str) -> dict[str, Any]:
        """A task of the DAG as parsed: retries, retry_delay, execution_timeout, pool, ..."""
        task: dict[str, Any] = self.get(f"/api/v2/dags/{DAG_ID}/tasks/{_q(task_id)}")
        return task

    def pool(self, name: str) -> dict[str, Any]:
        pool: dict[str, Any] = self.get(f"/api/v2/pools/{_q(name)}")
        return pool

    # -- diagnostics -----------------------------------------------------------------------------
    def log_tail(self, name: str, lines: int = 40) -> str:
        """The last lines of a component's log, without the task output the LocalExecutor
        copies into the scheduler's (the task logs are shown apart)."""
        path = self.home / f"{name}.log"
        if not path.is_file():
            return f"({path} missing)"
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        tail = [line for line in text if "[cosmos." not in line and "[task]" not in line][-lines:]
        return f"--- tail of {path}:\n" + "\n".join(tail)

    def explain(self, run_id: str | None = None) -> str:
        """What helps debugging a failed check: the task states of the run and the log tails of
        its failed or unfinished tasks, then the scheduler's log tail."""
        parts = []
        if run_id is not None:
            try:
                tis = self.task_instances(run_id)
            except (AirflowError, OSError) as exc:
                parts.append(f"(task instances unavailable: {exc})")
                tis = []
            parts.append(
                "task states: "
                + ", ".join(
                    f"{t['task_id']}[{t['map_index']}]={t['state']}/try {t['try_number']}"
                    for t in tis
                )
            )
            for ti in tis:
                if ti["state"] in ("success", "skipped", "removed", None) or ti["try_number"] < 1:
                    continue
                try:
                    text = self.task_log(run_id, ti["task_id"], ti["try_number"], ti["map_index"])
                except (AirflowError, OSError) as exc:
                    text = f"(log unavailable: {exc})"
                tail = "\n".join(text.splitlines()[-30:])
                parts.append(f"--- {ti['task_id']}[{ti['map_index']}] try {ti['try_number']}:")
                parts.append(tail)
        parts.append(self.log_tail("scheduler", 25))
        return "\n".join(parts)


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


@contextlib.contextmanager
def airflow_instance(home: Path, *, dags: Path = DAGS, bin_dir: Path = BIN) -> Iterator[Airflow]:
    """An Airflow whose metadata DB is being migrated in ``home`` (about 15 s): prepare the
    data meanwhile, then call ``start(dag_env)``. Everything stops when the block ends.
    ``dags`` and ``bin_dir``: see :func:`airflow_env`."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = airflow_env(home, port, dags=dags, bin_dir=bin_dir)
    airflow = Airflow(home=home, env=env, port=port, bin_dir=bin_dir)
    try:
        airflow.migrate()
        yield airflow
    finally:
        airflow.stop()


def pipeline_run_id(run: Mapping[str, Any]) -> str:
    """The pipeline's run id of a DAG run as the REST API returns it (``load_id`` in the
    ledger and in raw_meta.dbt_builds): what ``music_elt_airflow.runtime.run_id`` computes,
    written again here because importing that module would import Airflow into the tests."""
    import hashlib
    from datetime import datetime

    when = datetime.fromisoformat(
        (run.get("run_after") or run["logical_date"]).replace("Z", "+00:00")
    )
    suffix = hashlib.sha256(run["dag_run_id"].encode()).hexdigest()[:6]
    return f"{when:%Y%m%dT%H%M%SZ}-{suffix}"
