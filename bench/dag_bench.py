"""Benchmark the Airflow DAG against the CLI: the wall time of ``make dag-run`` (one DAG run under
``airflow dags test``) over the same new plays as ``music-elt run``, on a work directory that
already ran once, for each Cosmos mode of the DAG (MUSIC_ELT_COSMOS_MODE).

    .venv/bin/python bench/dag_bench.py --streams 1000000       # about 6 minutes

Steps: generate ``--streams`` new plays over 7 days plus one earlier day; seed a work directory
with the earlier day and run it once with ``make dag-run`` (so Airflow's metadata DB, the
manifest and Cosmos's partial-parse cache exist, as in a deployment) and once with
``music-elt run --build`` (so the CLI's dbt partial parse exists too); copy it, once per mode and
once for the CLI; add the new stream files to each copy's landing zone; then time, each in its
own process, imports included: ``music-elt run`` in one copy and ``make dag-run`` in the others.
Every DAG run must leave the same marts as the CLI. Results are printed and written to
bench/results/dag-<streams>.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
START = date(2026, 1, 5)  # the generator's default first day


def _env(repo: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MUSIC_ELT_", "WAREHOUSE_", "AIRFLOW"))
    }
    env.update(
        AIRFLOW__COSMOS__ENABLE_TELEMETRY="False",
        DBT_SEND_ANONYMOUS_USAGE_STATS="False",
        DO_NOT_TRACK="1",
        PATH=f"{repo / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


def _timed(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed (exit {result.returncode}); see {log}")
    return elapsed


def _marts(duckdb_path: Path) -> dict[str, list[tuple[object, ...]]]:
    """The published KPI marts of the work directory whose warehouse is ``duckdb_path``: what
    readers see, in its serving copy."""
    import duckdb

    marts = {}
    with duckdb.connect(str(duckdb_path.with_name("serving.duckdb")), read_only=True) as conn:
        for mart in ("fct_genre_kpis_daily", "fct_listening_kpis_hourly", "fct_top_artists_hourly"):
            marts[mart] = sorted(conn.execute(f"select * from marts.{mart}").fetchall(), key=repr)
    return marts


def _copy(base: Path, dest: Path, later: list[Path]) -> None:
    """A copy of the work directory ``base`` with the new stream files in its landing zone."""
    # cp -a keeps owners: the embedded PostgreSQL's data belongs to its own system user
    subprocess.run(["cp", "-a", str(base), str(dest)], check=True)
    cfg = dest / "airflow" / "airflow.cfg"  # Airflow wrote its home's absolute paths there
    if cfg.is_file():
        cfg.write_text(cfg.read_text().replace(str(base), str(dest)))
    for path in later:
        shutil.copy(path, dest / "landing" / "streams" / path.name)


def _count_rows(paths: list[Path]) -> int:
    rows = 0
    for path in paths:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as stream:
            rows += sum(1 for _ in stream) - 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=1_000_000, help="new plays (default 1M)")
    parser.add_argument(
        "--modes",
        default="watcher,watcher-subprocess,build,after-each",
        help="Cosmos modes to measure (MUSIC_ELT_COSMOS_MODE), comma-separated",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    args = parser.parse_args()
    bin_dir = REPO / ".venv" / "bin"
    env = _env(REPO)
    music_elt = str(bin_dir / "music-elt")

    root = Path(tempfile.mkdtemp(prefix="music-elt-dag-bench-"))
    data, first, base = root / "data", root / "first", root / "base"
    print(f"work in {root}", flush=True)
    # 8 days, the first of them loaded before the measured runs: the 7 others hold the new plays
    subprocess.run(
        [
            *(music_elt, "generate", "--out", str(data)),
            *("--streams", str(args.streams * 8 // 7), "--days", "8", "--seed", "7"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    (first / "streams").mkdir(parents=True)
    for name in ("users.csv", "songs.csv"):
        shutil.copy(data / name, first / name)
    day_one = f"listens_{START}_"
    later = sorted(p for p in (data / "streams").iterdir() if not p.name.startswith(day_one))
    for path in (data / "streams").iterdir():
        if path.name.startswith(day_one):
            shutil.copy(path, first / "streams" / path.name)
    quiet = {"check": True, "stdout": subprocess.DEVNULL, "env": env}
    subprocess.run([music_elt, "seed", "--workdir", str(base), "--from-dir", str(first)], **quiet)
    subprocess.run(
        ["make", "--no-print-directory", f"WORKDIR={base}", "dag-run"],
        cwd=REPO,
        stderr=subprocess.DEVNULL,
        **quiet,
    )
    subprocess.run([music_elt, "run", "--build", "--workdir", str(base)], **quiet)

    results: dict[str, Any] = {
        "commit": subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
        "new_plays": _count_rows(later),
        "new_files": len(later),
        "days": f"{START + timedelta(days=1)}..{START + timedelta(days=7)}",
    }
    _copy(base, root / "cli", later)
    results["cli_run_s"] = round(
        _timed([music_elt, "run", "--workdir", str(root / "cli")], env, root / "cli.log", REPO), 1
    )
    expected = _marts(root / "cli" / "warehouse.duckdb")
    for mode in args.modes.split(","):
        work = root / f"dag-{mode}"
        _copy(base, work, later)
        seconds = _timed(
            ["make", "--no-print-directory", f"WORKDIR={work}", "dag-run"],
            {**env, "MUSIC_ELT_COSMOS_MODE": mode},
            root / f"dag-{mode}.log",
            REPO,
        )
        results[mode] = {
            "dag_run_s": round(seconds, 1),
            "ratio": round(seconds / results["cli_run_s"], 2),
            "identical_marts": _marts(work / "warehouse.duckdb") == expected,
        }
        print(mode, results[mode], flush=True)
    print(json.dumps(results, indent=2))
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"dag-{args.streams}.json").write_text(json.dumps(results, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    if not all(r["identical_marts"] for r in results.values() if isinstance(r, dict)):
        raise SystemExit("a DAG run left other marts than the CLI run")


if __name__ == "__main__":
    main()
