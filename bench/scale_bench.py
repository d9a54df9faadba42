"""Benchmark the pipeline at scale against a plain DuckDB baseline (issue 8's scenarios):

    .venv/bin/python bench/scale_bench.py --streams 1000000     # 1M, 10M or 100M plays

Generates ``--streams`` plays over 8 days, then runs ``music-elt run`` as its own process for
each scenario on one work directory, measuring wall time, CPU time and peak RSS of that process:

1. a full run over the first 7 days (after ``seed``);
2. ``+1 day``: the 8th day's files arrive;
3. nothing new;
4. a changed songs snapshot (every 7th song moves to another genre), no new plays.

The baseline (bench/baseline_kpis.sql) computes the same three KPI marts from the full run's
CSV files (days 1-7) in one DuckDB script, in a process of its own. The bench prints each
scenario with its ratio to the baseline or to the full run, dbt's slowest nodes per scenario
(from run_results.json), and writes bench/results/scale-<streams>.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
START = date(2026, 1, 5)  # the generator's first day

_BASELINE = """
import duckdb, sys
conn = duckdb.connect()
conn.execute(open(sys.argv[1]).read())  # every statement of the script, in order
print(conn.execute("select count(*) from genre_kpis_daily").fetchone()[0])
"""


def measure(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Wall time, CPU time (user + system) and peak RSS of one process."""
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed; see {log}")
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 1024 / 1024, 2),
    }


def _node_name(unique_id: str) -> str:
    """``model.music_elt.x`` -> ``x``; a data test's name without its hash; a unit test as
    ``model.test``."""
    kind, _project, *rest = unique_id.split(".")
    return rest[0] if kind == "test" else ".".join(rest)


def slowest_nodes(work: Path, top: int = 6) -> dict[str, float]:
    """dbt's slowest nodes of the run that just finished (its run_results.json)."""
    results = json.loads((work / "dbt" / "target" / "run_results.json").read_text())
    timings = {_node_name(r["unique_id"]): r["execution_time"] for r in results["results"]}
    slowest = sorted(timings.items(), key=lambda item: -item[1])[:top]
    return {name: round(seconds, 1) for name, seconds in slowest}


def scenario(
    name: str, results: dict[str, Any], cmd: list[str], env: dict[str, str], root: Path
) -> None:
    """Run one scenario, record its figures and dbt's slowest nodes, print them. The run resets
    its peak RSS at each step (to report it per step), which also resets what wait4 reports:
    the process's peak is the largest of its steps' peaks."""
    log = root / f"{name.split()[0]}.log"
    results[name] = figures = measure(cmd, env, log)
    lines = [line.strip() for line in log.read_text().splitlines()]
    figures["summary"] = [line for line in lines if line.startswith(("time:", "peak RSS"))]
    steps = [line for line in lines if line.startswith("peak RSS:")]
    if steps:
        peaks = re.findall(r"([0-9.]+) GB", steps[-1])
        figures["peak_rss_gb"] = max([figures["peak_rss_gb"], *map(float, peaks)])
    if name != "nothing new":
        figures["slowest dbt nodes"] = slowest_nodes(Path(cmd[-1]))
    print(name, json.dumps(figures), flush=True)


def change_songs(songs: Path) -> None:
    """Every 7th song to another genre: a new songs snapshot with no new plays."""
    with songs.open(newline="") as src:
        rows = list(csv.DictReader(src))
    for i, row in enumerate(rows):
        if i % 7 == 0:
            row["track_genre"] = "reclassified"
    with songs.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--memory-limit",
        help="MUSIC_ELT_DUCKDB_MEMORY_LIMIT for the runs (default: the product's default)",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="music-elt-scale-"))
    data, first, work = root / "data", root / "first", root / "work"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MUSIC_ELT_", "WAREHOUSE_"))},
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
    }
    if args.memory_limit:
        env["MUSIC_ELT_DUCKDB_MEMORY_LIMIT"] = args.memory_limit
    music_elt = str(BIN / "music-elt")
    print(f"work in {root}", flush=True)
    results: dict[str, Any] = {
        "streams": args.streams,
        "days": 8,
        "memory_limit": args.memory_limit or "default",
    }

    results["generate"] = measure(
        [music_elt, "generate", "--out", str(data), "--streams", str(args.streams), "--days", "8"],
        env,
        root / "generate.log",
    )
    last_day = f"listens_{START + timedelta(days=7)}_"
    (first / "streams").mkdir(parents=True)
    for name in ("users.csv", "songs.csv"):
        shutil.copy(data / name, first / name)
    late = []
    for path in sorted((data / "streams").iterdir()):
        if path.name.startswith(last_day):
            late.append(path)
        else:
            os.link(path, first / "streams" / path.name)
    subprocess.run(
        [music_elt, "seed", "--workdir", str(work), "--from-dir", str(first)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    run = [music_elt, "run", "--workdir", str(work)]
    scenario("full run (7 days)", results, run, env, root)
    for path in late:
        shutil.copy(path, work / "landing" / "streams" / path.name)
    scenario("+1 day", results, run, env, root)
    scenario("nothing new", results, run, env, root)
    change_songs(first / "songs.csv")
    subprocess.run(
        [music_elt, "seed", "--workdir", str(work), "--from-dir", str(first)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    scenario("changed songs", results, run, env, root)

    files = sorted(str(p) for p in (first / "streams").iterdir())
    sql = (REPO / "bench" / "baseline_kpis.sql").read_text()
    script = root / "baseline.sql"
    script.write_text(
        sql.replace("{streams}", repr(files)).replace("{songs}", repr(str(data / "songs.csv")))
    )
    results["baseline (7 days, one DuckDB script)"] = measure(
        [sys.executable, "-c", _BASELINE, str(script)], env, root / "baseline.log"
    )
    baseline = results["baseline (7 days, one DuckDB script)"]
    full = results["full run (7 days)"]
    results["ratios"] = {
        "full run CPU / baseline CPU": round(full["cpu_s"] / baseline["cpu_s"], 2),
        "full run wall / baseline wall": round(full["wall_s"] / baseline["wall_s"], 2),
        "+1 day wall / full run wall": round(results["+1 day"]["wall_s"] / full["wall_s"], 2),
        "changed songs wall / full run wall": round(
            results["changed songs"]["wall_s"] / full["wall_s"], 2
        ),
    }
    print(json.dumps(results, indent=2))
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.memory_limit}" if args.memory_limit else ""
    (out_dir / f"scale-{args.streams}{suffix}.json").write_text(
        json.dumps(results, indent=2) + "\n"
    )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
