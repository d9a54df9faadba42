"""Benchmark the Airflow DAG against the CLI: the wall time of ``make dag-run`` (one DAG run under
``airflow dags test``) over the same new plays as ``music-elt run``, on a work directory that
already ran once.

    .venv/bin/python bench/dag_bench.py --streams 1000000        # about 4 minutes

Steps: generate ``--streams`` new plays over 7 days plus one earlier day; seed a work directory
with the earlier day and run it once (``music-elt run``); copy it twice; add the new stream files
to both copies' landing zone; prepare Airflow in the DAG copy as a deployment would be (manifest,
metadata DB: ``make airflow-setup``, untimed); then time, each in its own process, imports
included: ``music-elt run`` in one copy and ``make dag-run`` in the other. Both must leave
identical marts. ``--repo`` measures another checkout of the project (e.g. an older commit) with
this same procedure. Results are printed and written to bench/results/dag-<streams>.json.
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

HERE = Path(__file__).resolve().parent.parent
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
    import duckdb

    marts = {}
    with duckdb.connect(str(duckdb_path), read_only=True) as conn:
        for mart in ("fct_genre_kpis_daily", "fct_listening_kpis_hourly", "fct_top_artists_hourly"):
            marts[mart] = sorted(conn.execute(f"select * from marts.{mart}").fetchall(), key=repr)
    return marts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=1_000_000, help="new plays (default 1M)")
    parser.add_argument("--repo", type=Path, default=HERE, help="checkout to measure")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    args = parser.parse_args()
    repo = args.repo.resolve()
    bin_dir = repo / ".venv" / "bin"
    env = _env(repo)

    root = Path(tempfile.mkdtemp(prefix="music-elt-dag-bench-"))
    data, first, base = root / "data", root / "first", root / "base"
    print(f"work in {root}", flush=True)
    # 8 days, the first of them already loaded: the 7 others hold --streams new plays
    total = args.streams * 8 // 7
    subprocess.run(
        [
            *(str(bin_dir / "music-elt"), "generate", "--out", str(data)),
            *("--streams", str(total), "--days", "8", "--seed", "7"),
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
    music_elt = str(bin_dir / "music-elt")
    subprocess.run(
        [music_elt, "seed", "--workdir", str(base), "--from-dir", str(first)],
        check=True,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    subprocess.run(
        [music_elt, "run", "--workdir", str(base)], check=True, stdout=subprocess.DEVNULL, env=env
    )
    new_plays = 0
    for name in ("cli", "dag"):
        # cp -a keeps owners: the embedded PostgreSQL's data belongs to its own system user
        subprocess.run(["cp", "-a", str(base), str(root / name)], check=True)
        for path in later:
            shutil.copy(path, root / name / "landing" / "streams" / path.name)
    for path in later:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as stream:
            new_plays += sum(1 for _ in stream) - 1
    results: dict[str, object] = {
        "repo": str(repo),
        "commit": subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
        "new_plays": new_plays,
        "new_files": len(later),
        "first_day": str(START),
        "last_day": str(START + timedelta(days=7)),
    }

    make = ["make", "--no-print-directory", f"WORKDIR={root / 'dag'}"]
    setup_target = "airflow-setup"
    has_setup = (
        subprocess.run(
            ["make", "-n", setup_target, f"WORKDIR={root / 'dag'}"],
            cwd=repo,
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    if has_setup:  # a deployment has its manifest and metadata DB before the first run
        results["airflow_setup_s"] = _timed(
            [*make, setup_target], env, root / "setup.log", cwd=repo
        )
    results["cli_run_s"] = _timed(
        [music_elt, "run", "--workdir", str(root / "cli")], env, root / "cli-run.log", cwd=repo
    )
    results["dag_run_s"] = _timed([*make, "dag-run"], env, root / "dag-run.log", cwd=repo)
    results["ratio"] = round(results["dag_run_s"] / results["cli_run_s"], 2)  # type: ignore[operator]
    same = _marts(root / "cli" / "warehouse.duckdb") == _marts(root / "dag" / "warehouse.duckdb")
    results["identical_marts"] = same
    print(json.dumps(results, indent=2))
    out_dir = HERE / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if repo == HERE else f"-{results['commit']}"
    (out_dir / f"dag-{args.streams}{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    if not same:
        raise SystemExit("the DAG run and the CLI run left different marts")


if __name__ == "__main__":
    main()
