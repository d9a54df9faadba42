"""Runs whose clocks disagree (no wall clock in watermarks), through real ``music-elt run``
subprocesses whose whole process tree (Python, DuckDB, dbt) runs under Debian's ``faketime``.

What is new comes from the ledger's load sequence, never from ``_loaded_at``: runs 2 h behind
the previous one (another worker, an NTP step), then 3 h ahead, then back on time each load and
count everything, the marts equal the independent reference after each, with a correction
among them, on DuckDB and on PostgreSQL; the ledger's load times go back and forth while its
sequence only rises, and each run records one green build with its watermark.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from tests.checks import query
from tests.conftest import new_database
from tests.fault.conftest import make_stack
from tests.fault.harness import Stack, postgres_warehouse_env

pytestmark = [pytest.mark.fault, pytest.mark.slow]

FAKETIME = shutil.which("faketime")


def clock(offset: str) -> list[str]:
    """A command line prefix running a process tree with its wall clock shifted by ``offset``
    (``-2h``, ``+3h``); monotonic clocks stay true, as they do when NTP steps the wall clock."""
    assert FAKETIME is not None
    return ["env", "FAKETIME_DONT_FAKE_MONOTONIC=1", FAKETIME, "-f", offset]


@pytest.fixture(params=["duckdb", "postgres"])
def clock_stack(request: pytest.FixtureRequest, tmp_path: Path, generated: Path) -> Iterator[Stack]:
    """A stack on the local landing zone with its warehouse on DuckDB or on a PostgreSQL
    database of its own."""
    if FAKETIME is None:
        if os.environ.get("MUSIC_ELT_REQUIRE_FAKETIME"):
            pytest.fail("faketime is required here (MUSIC_ELT_REQUIRE_FAKETIME) but not installed")
        pytest.skip("Debian's faketime is not installed (apt-get install faketime; .ci/run does)")
    stack = make_stack(request, tmp_path, generated, "local")
    if request.param == "postgres":
        stack.env |= postgres_warehouse_env(new_database(request.getfixturevalue("pg_server")))
    yield stack
    stack.stop_all()


def withdrawn(data: bytes) -> bytes:
    """A correction of a plain CSV stream file: every other row withdrawn."""
    header, *rows = data.decode().splitlines(keepends=True)
    return "".join([header, *rows[::2]]).encode()


def test_runs_whose_clocks_step_back_and_ahead_load_and_count_everything(
    clock_stack: Stack,
) -> None:
    stack = clock_stack
    files = sorted((stack.source / "streams").iterdir())
    batches = [files[:4], files[4:7], files[7:9], files[9:]]
    assert all(batches), f"expected at least 10 generated files, got {len(files)}"
    plain = next(path for path in batches[0] if path.name.endswith(".csv"))

    def deliver(paths: list[Path]) -> None:
        for path in paths:
            stack.deliver(f"streams/{path.name}", path.read_bytes())

    deliver(batches[0])
    stack.run_ok()
    stack.assert_recovered()

    deliver(batches[1])
    stack.run_ok(wrapper=clock("-2h"))  # dbt's assert_stream_rows_accounted passes: exit 0
    stack.assert_recovered()

    deliver(batches[2])
    stack.deliver(f"streams/{plain.name}", withdrawn(plain.read_bytes()))  # a correction
    stack.run_ok(wrapper=clock("+3h"))
    stack.assert_recovered()

    deliver(batches[3])
    stack.run_ok()  # on time again: 3 h behind the last run
    stack.assert_recovered()

    # the clocks did step: the ledger's load times go back and forth, its sequence only up
    runs = query(
        stack.settings,
        "select load_id, min(load_seq), max(load_seq), max(loaded_at) "
        "from raw_meta.load_ledger group by load_id order by min(load_seq)",
    )
    assert len(runs) == 4, runs
    times = [row[3] for row in runs]
    assert times[1] < times[0] and times[2] > times[1] and times[3] < times[2], runs
    assert all(earlier[2] < later[1] for earlier, later in pairwise(runs))
    # one green build per run, each with the watermark of the loads it built
    builds = query(stack.settings, "select load_id, load_seq from raw_meta.dbt_builds")
    assert sorted(builds) == sorted((run[0], run[2]) for run in runs), (builds, runs)
