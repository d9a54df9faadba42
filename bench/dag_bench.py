"""Benchmark the Airflow DAG where users run it, under a real scheduler, against the CLI.

    .venv/bin/python bench/dag_bench.py --streams 1000000       # about 10 minutes

Airflow runs as in production on one machine (tests/dags/scheduler.py: scheduler,
dag-processor, triggerer and API server, LocalExecutor); runs are triggered through its REST
API and timed from the run's ``queued_at`` to its ``end_date`` (trigger to end).

Steps: generate ``--streams`` new plays over 7 days plus one earlier day; seed a work directory
with the earlier day; start Airflow on it and run the DAG once (the warm-up: Airflow's metadata
DB, the manifest and Cosmos's dbt cache exist, as on a deployment that already ran); stop
Airflow; copy the work directory for the CLI and run ``music-elt run --build`` there once (so
the CLI's dbt partial parse exists too); add the new stream files to both landing zones; time
``music-elt run`` (its own process, imports included), then a nothing-new ``music-elt run``;
start Airflow again on the same home and time a DAG run, then a nothing-new DAG run. The DAG
must leave the marts the CLI left. Each task's time (the REST API's start and end) is kept for
the profile. Results: bench/results/dag-<streams>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.dags.scheduler import Airflow, airflow_instance  # noqa: E402

START = date(2026, 1, 5)  # the generator's default first day
PRODUCER = "dbt.dbt_producer_watcher"
MARTS = ("fct_genre_kpis_daily", "fct_listening_kpis_hourly", "fct_top_artists_hourly")


def commit() -> str:
    """The checkout's short commit, recorded with each result ("" outside a git checkout)."""
    return subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def env_without_settings() -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MUSIC_ELT_", "WAREHOUSE_", "AIRFLOW"))
    }
    env.update(DBT_SEND_ANONYMOUS_USAGE_STATS="False", DO_NOT_TRACK="1")
    return env


def timed(cmd: list[str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(
            cmd, env=env_without_settings(), stdout=out, stderr=subprocess.STDOUT, check=False
        )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed (exit {result.returncode}); see {log}")
    return elapsed


def marts(workdir: Path) -> dict[str, list[tuple[object, ...]]]:
    """The published KPI marts of a DuckDB work directory (its serving copy)."""
    import duckdb

    with duckdb.connect(str(workdir / "serving.duckdb"), read_only=True) as conn:
        return {
            mart: sorted(conn.execute(f"select * from marts.{mart}").fetchall(), key=repr)
            for mart in MARTS
        }


def stop_embedded_rds(workdir: Path) -> None:
    """Stop the embedded RDS a task started in ``workdir`` (before copying it)."""
    from loaders.config import Settings
    from loaders.demo.embedded import embedded_server

    embedded_server(Settings.from_env({}, workdir=workdir).pgdata).cleanup()


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def dag_run(airflow: Airflow, timeout: float) -> dict[str, Any]:
    """Trigger a run, wait for its end; its trigger-to-end seconds and where they went."""
    run = airflow.trigger()
    run_id = run["dag_run_id"]
    final = airflow.wait_for_run(run_id, timeout)
    if final["state"] != "success":
        raise SystemExit(f"DAG run {run_id} ended {final['state']}:\n{airflow.explain(run_id)}")
    queued, ended = _when(final["queued_at"]), _when(final["end_date"])
    assert queued and ended
    tasks = airflow.task_instances(run_id)
    phases: dict[str, list[datetime]] = defaultdict(list)
    busy: dict[str, float] = defaultdict(float)
    for ti in tasks:
        start, end = _when(ti["start_date"]), _when(ti["end_date"])
        if start is None or end is None or ti["state"] == "skipped":
            continue
        task_id = ti["task_id"]
        phase = (
            "producer"
            if task_id == PRODUCER
            else "model_tasks"
            if task_id.startswith("dbt.")
            else "archive_publish"
            if task_id in ("archive", "publish")
            else "before_dbt"
        )
        phases[phase] += [start, end]
        busy[phase] += (end - start).total_seconds()
    profile = {
        phase: {
            "from_trigger_s": round((min(times) - queued).total_seconds(), 1),
            "until_s": round((max(times) - queued).total_seconds(), 1),
            "task_seconds": round(busy[phase], 1),
        }
        for phase, times in phases.items()
    }
    return {
        "trigger_to_end_s": round((ended - queued).total_seconds(), 1),
        "tasks": len(tasks),
        "profile": profile,
        "run_id": run_id,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=1_000_000, help="new plays (default 1M)")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    parser.add_argument(
        "--dag-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the DAG (e.g. MUSIC_ELT_COSMOS_MODE=build); repeatable",
    )
    args = parser.parse_args()
    music_elt = str(REPO / ".venv" / "bin" / "music-elt")
    subprocess.run(["make", "--no-print-directory", "manifest"], cwd=REPO, check=True)
    manifest = REPO / "dbt_project" / "target" / "airflow-duckdb" / "manifest.json"  # make manifest

    root = Path(tempfile.mkdtemp(prefix="music-elt-dag-bench-"))
    data, first, dagwork, cliwork = (root / n for n in ("data", "first", "dag", "cli"))
    print(f"work in {root}", flush=True)
    quiet: dict[str, Any] = {
        "check": True,
        "stdout": subprocess.DEVNULL,
        "env": env_without_settings(),
    }
    # 8 days, the first of them loaded before the measured runs: the 7 others hold the new plays
    subprocess.run(
        [
            *(music_elt, "generate", "--out", str(data)),
            *("--streams", str(args.streams * 8 // 7), "--days", "8", "--seed", "7"),
        ],
        **quiet,
    )
    (first / "streams").mkdir(parents=True)
    for name in ("users.csv", "songs.csv"):
        shutil.copy(data / name, first / name)
    day_one = f"listens_{START}_"
    later = sorted(p for p in (data / "streams").iterdir() if not p.name.startswith(day_one))
    for path in (data / "streams").iterdir():
        if path.name.startswith(day_one):
            shutil.copy(path, first / "streams" / path.name)
    subprocess.run(
        [music_elt, "seed", "--workdir", str(dagwork), "--from-dir", str(first)], **quiet
    )

    dag_env = {
        "MUSIC_ELT_SCHEDULE": "",
        "MUSIC_ELT_WORKDIR": str(dagwork),
        "MUSIC_ELT_DBT_MANIFEST": str(manifest),
        **dict(setting.split("=", 1) for setting in args.dag_env),
    }
    results: dict[str, Any] = {
        "commit": commit(),
        "dag_env": args.dag_env,
        "load_before": os.getloadavg()[0],
    }
    home = root / "airflow"
    with airflow_instance(home) as airflow:  # the warm-up run, on the first day
        airflow.start(dag_env)
        results["warm_up"] = dag_run(airflow, 3600)
    stop_embedded_rds(dagwork)
    subprocess.run(["cp", "-a", str(dagwork), str(cliwork)], check=True)
    subprocess.run([music_elt, "run", "--build", "--workdir", str(cliwork)], **quiet)
    stop_embedded_rds(cliwork)
    for path in later:
        for work in (dagwork, cliwork):
            shutil.copy(path, work / "landing" / "streams" / path.name)
    results["new_files"] = len(later)
    results["new_plays_generated"] = args.streams

    cli = [music_elt, "run", "--workdir", str(cliwork)]
    results["cli_run_s"] = round(timed(cli, root / "cli.log"), 1)
    results["cli_nothing_new_s"] = round(timed(cli, root / "cli-nothing-new.log"), 1)
    stop_embedded_rds(cliwork)

    with airflow_instance(home) as airflow:
        airflow.start(dag_env)
        results["dag"] = dag_run(airflow, 7200)
        results["dag_nothing_new"] = dag_run(airflow, 600)
    stop_embedded_rds(dagwork)
    results["ratio"] = round(results["dag"]["trigger_to_end_s"] / results["cli_run_s"], 2)
    results["identical_marts"] = marts(dagwork) == marts(cliwork)
    results["load_after"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-" + "-".join(s.split("=", 1)[1] for s in args.dag_env) if args.dag_env else ""
    (out_dir / f"dag-scheduler-{args.streams}{suffix}.json").write_text(
        json.dumps(results, indent=2) + "\n"
    )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    if not results["identical_marts"]:
        raise SystemExit("the DAG run left other marts than the CLI run")


if __name__ == "__main__":
    main()
