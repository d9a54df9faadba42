"""Freshness: seconds from a stream file PUT into S3 until the published marts contain its plays,
with the DAG event-driven under a real Airflow.

    .venv/bin/python bench/freshness_bench.py --held 10000000              # about 15 minutes
    .venv/bin/python bench/freshness_bench.py --held 100000000 --files 1

The landing zone is on moto's S3 server, which notifies an SQS queue (moto too) of new stream
files, as dags/README.md sets a bucket up; Airflow (tests/dags/scheduler.py: scheduler,
dag-processor, triggerer, API server, LocalExecutor) runs the DAG on that queue only (no time
schedule).

Steps: generate ``--held`` plays over 7 days and one more day; ``music-elt seed`` and
``music-elt run`` load the 7 days (the warehouse holds them); the 8th day's plays are cut into
files of ``--file-plays`` plays. Airflow starts; a first file warms it up (not counted). Then
for each of ``--files`` files, one at a time: PUT it, and take the time from the PUT to the end
of the ``publish`` task of the run the notification started (Airflow's clock; the marts are
published for readers when that task ends), then check that the published marts gained the
file's plays. Results: bench/results/freshness-<held>.json.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.dag_bench import commit, env_without_settings, stop_embedded_rds  # noqa: E402
from tests.dags.scheduler import TERMINAL, Airflow, airflow_instance  # noqa: E402
from tests.dags.test_events import PREFIX, aws_conn, notified_queue  # noqa: E402

LAST_DAY = date(2026, 1, 12)  # the 8th day of the generator's (from 2026-01-05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def chunks(paths: list[Path], size: int, count: int) -> list[bytes]:
    """``count`` CSV files of ``size`` plays each, cut from the plays of ``paths``."""
    header: list[str] = []
    rows: list[list[str]] = []
    for path in paths:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", newline="") as stream:
            header, *more = list(csv.reader(stream))
        rows += more
        if len(rows) >= size * count:
            break
    if len(rows) < size * count:
        raise SystemExit(f"the last day has {len(rows)} plays, fewer than {count} x {size}")
    out = []
    for n in range(count):
        buffer = io.StringIO()
        csv.writer(buffer).writerows([header, *rows[n * size : (n + 1) * size]])
        out.append(buffer.getvalue().encode())
    return out


def plays_published(workdir: Path) -> int:
    """The plays the published hourly KPI mart counts (its serving copy)."""
    from loaders.config import Settings
    from loaders.serving import open_reader

    rows = open_reader(Settings.from_env({}, workdir=workdir)).query(
        "select coalesce(sum(listen_count), 0) from marts.fct_listening_kpis_hourly"
    )
    return int(rows[0][0])


def run_after(airflow: Airflow, put_at: datetime, timeout: float) -> dict[str, Any]:
    """The first run queued after ``put_at``, once it ended; with its task instances."""
    path = "/api/v2/dags/music_streaming_pipeline/dagRuns?limit=100&order_by=-run_after"

    def ended() -> dict[str, Any] | None:
        for run in airflow.get(path)["dag_runs"]:
            queued = _when(run["queued_at"])
            if queued and queued >= put_at and run["state"] in TERMINAL:
                return run  # type: ignore[no-any-return]
        return None

    run: dict[str, Any] = airflow.wait_until(ended, timeout, "no run ended after the PUT")
    if run["state"] != "success":
        raise SystemExit(f"run {run['dag_run_id']} failed:\n{airflow.explain(run['dag_run_id'])}")
    run["tasks"] = {ti["task_id"]: ti for ti in airflow.task_instances(run["dag_run_id"])}
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--held", type=int, default=10_000_000, help="plays held (default 10M)")
    parser.add_argument("--files", type=int, default=5, help="files measured (default 5)")
    parser.add_argument("--file-plays", type=int, default=100_000, help="plays per file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    import boto3
    from moto.server import ThreadedMotoServer

    music_elt = str(REPO / ".venv" / "bin" / "music-elt")
    subprocess.run(["make", "--no-print-directory", "manifest"], cwd=REPO, check=True)
    manifest = REPO / "dbt_project" / "target" / "airflow-duckdb" / "manifest.json"  # make manifest
    root = Path(tempfile.mkdtemp(prefix="music-elt-freshness-"))
    data, first, workdir = root / "data", root / "first", root / "work"
    print(f"work in {root}", flush=True)

    port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    creds = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(creds)
    bucket = "music-elt-freshness"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    landing = f"s3://{bucket}/{PREFIX}"
    cli_env = {
        **env_without_settings(),
        **creds,
        "MUSIC_ELT_LANDING": landing,
        "MUSIC_ELT_S3_ENDPOINT_URL": endpoint,
    }
    quiet: dict[str, Any] = {"check": True, "stdout": subprocess.DEVNULL, "env": cli_env}
    results: dict[str, Any] = {
        "commit": commit(),
        "held_plays_generated": args.held,
        "file_plays": args.file_plays,
        "load_before": os.getloadavg()[0],
    }
    try:
        subprocess.run(
            [
                *(music_elt, "generate", "--out", str(data)),
                *("--streams", str(args.held * 8 // 7), "--days", "8", "--seed", "7"),
            ],
            **quiet,
        )
        (first / "streams").mkdir(parents=True)
        for name in ("users.csv", "songs.csv"):
            shutil.copy(data / name, first / name)
        last = f"listens_{LAST_DAY}_"
        streams = sorted((data / "streams").iterdir())
        for path in streams:
            if not path.name.startswith(last):
                shutil.copy(path, first / "streams" / path.name)
        files = chunks(
            [p for p in streams if p.name.startswith(last)], args.file_plays, args.files + 1
        )
        shutil.rmtree(data / "streams")
        seed = [music_elt, "seed", "--workdir", str(workdir), "--from-dir", str(first)]
        subprocess.run(seed, **quiet)
        started = time.perf_counter()
        subprocess.run([music_elt, "run", "--workdir", str(workdir)], **quiet)
        results["full_run_s"] = round(time.perf_counter() - started, 1)
        stop_embedded_rds(workdir)
        held = plays_published(workdir)
        results["held_plays_published"] = held

        queue = notified_queue(endpoint, bucket, "music-elt-streams")
        s3 = boto3.client("s3", endpoint_url=endpoint)
        with airflow_instance(root / "airflow") as airflow:
            airflow.start(
                {
                    "MUSIC_ELT_SCHEDULE": "",
                    "MUSIC_ELT_WORKDIR": str(workdir),
                    "MUSIC_ELT_DBT_MANIFEST": str(manifest),
                    "MUSIC_ELT_LANDING": landing,
                    "MUSIC_ELT_SQS_QUEUE_URL": queue,
                    "AIRFLOW_CONN_AWS_CONN": aws_conn(endpoint),
                    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                    **creds,
                }
            )
            airflow.wait_until(
                lambda: (
                    "Starting SQS sensor trigger"
                    in (airflow.home / "triggerer.log").read_text(errors="replace")
                ),
                300,
                "the SQS watcher did not start",
            )
            measured = []
            for n, body in enumerate(files):
                before = plays_published(workdir)
                put_at = datetime.now(UTC)
                s3.put_object(Bucket=bucket, Key=f"{PREFIX}/streams/fresh-{n:02d}.csv", Body=body)
                run = run_after(airflow, put_at, 1800)
                publish = _when(run["tasks"]["publish"]["end_date"])
                queued = _when(run["queued_at"])
                build = run["tasks"]["dbt.dbt_producer_watcher"]
                assert publish and queued
                gained = plays_published(workdir) - before
                row = {
                    "put_to_published_s": round((publish - put_at).total_seconds(), 1),
                    "put_to_run_queued_s": round((queued - put_at).total_seconds(), 1),
                    "dbt_build_s": build["duration"],
                    "plays_gained": gained,
                    "run_id": run["dag_run_id"],
                    "load": os.getloadavg()[0],
                }
                if gained < args.file_plays * 0.9:
                    raise SystemExit(f"the marts gained {gained} plays of {args.file_plays}")
                print("warm-up" if n == 0 else f"file {n}", row, flush=True)
                if n:
                    measured.append(row)
                else:
                    results["warm_up"] = row
                # the run ends after publish (the model tasks report): wait, so runs don't overlap
                airflow.wait_until(
                    lambda run_id=run["dag_run_id"]: airflow.dag_run(run_id)["state"] in TERMINAL,
                    600,
                    "the run did not end",
                )
        seconds = [r["put_to_published_s"] for r in measured]
        results["files"] = measured
        results["median_s"] = statistics.median(seconds)
        results["worst_s"] = max(seconds)
        results["load_after"] = os.getloadavg()[0]
    finally:
        stop_embedded_rds(workdir)
        moto.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results, indent=2))
    out = REPO / "bench" / "results" / f"freshness-{args.held}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
