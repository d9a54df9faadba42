"""The fault suite's own machinery, checked without running the pipeline: the triggers match
what the console prints, failure output stays readable, the one-line check can fail."""

from __future__ import annotations

import io

import pytest

from loaders.console import Console
from loaders.dbt import NodeProgress
from tests.checks import is_superseded
from tests.fault.harness import condensed, dbt_halfway, extracting, file_loaded, one_line_stderr

pytestmark = pytest.mark.fault


@pytest.mark.parametrize("tty", [True, False])
def test_dbt_trigger_matches_the_console_counter(tty: bool) -> None:
    progress = NodeProgress("build", Console(io.StringIO(), tty=tty))
    progress.total = 94
    progress.done.update({"models": 12, "tests": 35})
    assert dbt_halfway(progress.text())
    progress.done.subtract({"tests": 1})
    assert not dbt_halfway(progress.text())


def test_load_and_extract_triggers() -> None:
    line = "  [3/11] streams/listens_2026-01-05_part-003.csv.gz: loaded (312 rows)"
    assert file_loaded(3)(line) and file_loaded(2)(line) and not file_loaded(4)(line)
    assert extracting("  users: 100 rows extracted (1 parts)")
    assert not extracting("  songs: 100 rows extracted (1 parts)")


def test_condensed_keeps_the_last_counter_of_each_burst() -> None:
    loads = [f"  [{i}/3] streams/f{i}.csv: loaded (1 rows)" for i in (1, 2, 3)]
    nodes = [f"  dbt build: {i}/9 nodes done (tests {i})" for i in range(10)]
    out = "\n".join(["==> load", *loads, "==> dbt build", *nodes])
    assert condensed(out).splitlines() == [
        "==> load",
        "  [3/3] streams/f3.csv: loaded (1 rows)",
        "==> dbt build",
        "  dbt build: 9/9 nodes done (tests 9)",
    ]


def test_one_line_stderr() -> None:
    assert one_line_stderr("music-elt: error: x\n\n") == "music-elt: error: x"
    with pytest.raises(AssertionError):
        one_line_stderr("Traceback (most recent call last):\n  boom\n")


@pytest.mark.parametrize(
    ("row", "superseded"),
    [
        ({"status": "loaded"}, False),
        ({"status": "superseded"}, True),
        ({"status": "loaded", "superseded_at": None}, False),
        ({"status": "loaded", "superseded_by": "abc"}, True),
        ({"status": "loaded", "is_superseded": True}, True),
        ({"status": "loaded", "is_superseded": False}, False),
    ],
)
def test_superseded_markers(row: dict[str, object], superseded: bool) -> None:
    assert is_superseded(row) == superseded
