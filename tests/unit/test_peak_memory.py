"""Peak RSS per step: the measurement and the run summary's line."""

from __future__ import annotations

import sys

import pytest

from loaders import peak_memory
from loaders.pipeline import RunSummary


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resets the peak on Linux only")
def test_a_reset_starts_the_peak_again_from_the_current_rss() -> None:
    assert peak_memory.reset()
    block = bytearray(200_000_000)  # zero-filled, so every page is touched
    held = peak_memory.peak_bytes()
    del block
    assert peak_memory.reset()
    assert peak_memory.peak_bytes() < held - 150_000_000


def test_the_summary_gives_each_steps_peak() -> None:
    summary = RunSummary(
        run_id="r",
        timings={"extract": 0.3, "load": 1.0, "dbt build": 11.8},
        peak_rss={"extract": 110_000_000, "load": 400_000_000, "dbt build": 1_734_000_000},
    )
    assert summary.lines()[-1] == "  peak RSS: extract 0.11 GB, load 0.40 GB, dbt build 1.73 GB"
    summary.peak_rss_per_step = False  # no reset (not Linux): the process's peak so far
    assert summary.lines()[-1].startswith("  peak RSS of the process so far: extract 0.11 GB")
