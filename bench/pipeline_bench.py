"""Benchmark the pipeline on the embedded stack: generate, seed, a full run, then an
incremental run with one late file, with wall time per step and peak memory.

    .venv/bin/python bench/pipeline_bench.py --streams 1000000 --days 7

Results are printed and written to bench/results/pipeline-<streams>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

from loaders import pipeline
from loaders.config import Settings
from music_elt_demo.generate import generate
from music_elt_demo.seed import seed


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="music-elt-bench-"))
    data, work = root / "data", root / "work"
    settings = Settings.from_env({}, workdir=work)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    generate(data, streams=args.streams, days=args.days, seed=7)
    timings["generate"] = time.perf_counter() - started
    stream_files = sorted((data / "streams").iterdir())
    late = stream_files.pop(len(stream_files) // 2)  # held back: arrives after the first run
    held = root / "held"
    held.mkdir()
    shutil.move(late, held / late.name)

    started = time.perf_counter()
    seed(settings, data)
    timings["seed"] = time.perf_counter() - started

    summary = pipeline.run(settings, progress=lambda _m: None)
    timings.update({f"run1 {k}": v for k, v in summary.timings.items()})
    rows = summary.load.stream_rows if summary.load else 0

    shutil.move(held / late.name, data / "streams" / late.name)
    seed(settings, data)
    summary2 = pipeline.run(settings, progress=lambda _m: None)
    timings.update({f"run2 {k}": v for k, v in summary2.timings.items()})

    started = time.perf_counter()
    summary3 = pipeline.run(settings, progress=lambda _m: None)
    timings["run3 (nothing new)"] = time.perf_counter() - started
    assert summary3.load is None

    result = {
        "streams": args.streams,
        "days": args.days,
        "stream_rows_loaded_run1": rows,
        "data_mb": round(sum(p.stat().st_size for p in (data / "streams").iterdir()) / 2**20, 1),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "mart_rows": summary2.mart_rows,
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"pipeline-{args.streams}.json").write_text(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
