"""Benchmark the Airflow DAG: how long parsing the DAG file takes, and the wall time of one DAG
run (``airflow dags test``) against ``music-elt run`` on the same data.

    .venv/bin/python bench/dag_bench.py --streams 100000 --days 7

Both runs start from identical work directories (generated, then seeded) on the embedded stack
(pgserver RDS, local landing, DuckDB) and each runs in its own process, imports included.
Results are printed and written to bench/results/dag-<streams>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DAG_ID = "music_streaming_pipeline"

_PARSE = """
import json, time
t0 = time.perf_counter()
import airflow.sdk, cosmos  # what every parse of the DAG folder pays first
t1 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={dags!r})
t2 = time.perf_counter()
assert not bag.import_errors, bag.import_errors
tasks = len(bag.dags[{dag!r}].tasks)
print(json.dumps({{"imports_s": t1 - t0, "dag_file_s": t2 - t1, "tasks": tasks}}))
"""


def _env(home: Path, workdir: Path, manifest: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "AIRFLOW__COSMOS__CACHE_DIR": str(home / "cosmos-cache"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        "MUSIC_ELT_WORKDIR": str(workdir),
        "MUSIC_ELT_DBT_MANIFEST": str(manifest),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed (exit {result.returncode}); see {log}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--parse-repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="music-elt-dag-bench-"))
    data, home = root / "data", root / "airflow"
    cli_work, dag_work = root / "work-cli", root / "work-dag"
    manifest_dir = root / "manifest"
    results: dict[str, object] = {"streams": args.streams, "days": args.days}
    print(f"work in {root}", flush=True)

    base_env = _env(home, dag_work, manifest_dir / "manifest.json")
    subprocess.run(
        [
            *(str(BIN / "music-elt"), "generate", "--out", str(data)),
            *("--streams", str(args.streams), "--days", str(args.days), "--seed", "7"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for work in (cli_work, dag_work):
        subprocess.run(
            [str(BIN / "music-elt"), "seed", "--workdir", str(work), "--from-dir", str(data)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    started = time.perf_counter()
    subprocess.run(
        [
            *(str(BIN / "dbt"), "parse", "--quiet", "--profiles-dir", ".", "--target", "duckdb"),
            *("--target-path", str(manifest_dir), "--log-path", str(manifest_dir / "logs")),
        ],
        cwd=REPO / "dbt_project",
        env={**base_env, "MUSIC_ELT_DUCKDB_PATH": str(root / "unused.duckdb")},
        check=True,
    )
    results["manifest_s"] = time.perf_counter() - started
    results["airflow_db_migrate_s"] = _timed(
        [str(BIN / "airflow"), "db", "migrate"], base_env, root / "migrate.log"
    )
    subprocess.run(
        [str(BIN / "airflow"), "pools", "set", "music_elt_duckdb", "1", "DuckDB writer"],
        env=base_env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    # 1. parsing: a fresh process each time, as a DAG processor would
    parses = []
    for _ in range(args.parse_repeats):
        out = subprocess.run(
            [sys.executable, "-c", _PARSE.format(dags=str(REPO / "dags"), dag=DAG_ID)],
            env=base_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        parses.append(json.loads(out.strip().splitlines()[-1]))
    results["parse"] = {
        "imports_s": statistics.median(p["imports_s"] for p in parses),
        "dag_file_s": statistics.median(p["dag_file_s"] for p in parses),
        "tasks": parses[0]["tasks"],
    }

    # 2. one run each, same data, own process (imports included)
    results["cli_run_s"] = _timed(
        [str(BIN / "music-elt"), "run", "--workdir", str(cli_work)],
        {**base_env, "MUSIC_ELT_WORKDIR": str(cli_work)},
        root / "cli-run.log",
    )
    results["dag_run_s"] = _timed(
        [str(BIN / "airflow"), "dags", "test", DAG_ID], base_env, root / "dag-run.log"
    )
    results["overhead_s"] = results["dag_run_s"] - results["cli_run_s"]  # type: ignore[operator]
    results["overhead_x"] = results["dag_run_s"] / results["cli_run_s"]  # type: ignore[operator]

    print(json.dumps(results, indent=2))
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"dag-{args.streams}.json").write_text(json.dumps(results, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
