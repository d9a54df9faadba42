"""The console: counters in place on a terminal, sparse plain lines when piped, dbt's progress
from its events, and one explained line per by-design dbt warning (no I/O)."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

from loaders.console import Console
from loaders.dbt import NodeProgress, console_args, explanation, warning_line


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_piped_counters_print_when_done_and_at_most_every_interval() -> None:
    out, clock = io.StringIO(), Clock()
    console = Console(out, tty=False, interval=10, clock=clock)
    console.say("==> load")
    for i in range(1, 101):
        clock.now = i * 0.25  # 25 s in all: one line at 10 s, one at 20 s, the last
        console.say(f"  [{i}/100] file_{i}.csv: loaded")
    console.say("==> dbt build")
    assert out.getvalue().splitlines() == [
        "==> load",
        "  [40/100] file_40.csv: loaded",
        "  [80/100] file_80.csv: loaded",
        "  [100/100] file_100.csv: loaded",
        "==> dbt build",
    ]


def test_terminal_counters_rewrite_one_line() -> None:
    out = io.StringIO()
    console = Console(out, tty=True)
    console.say("  [1/3] a long first name")
    console.say("  [2/3] b")
    console.say("a plain line ends an unfinished counter")
    console.say("  [1/1] done")
    console.say("next")
    first = "  [1/3] a long first name"
    assert out.getvalue() == (
        f"\r{first}"
        + "\r"
        + "  [2/3] b".ljust(len(first))  # padded over the longer text before it
        + "\na plain line ends an unfinished counter\n"
        + "\r  [1/1] done\n"
        + "next\n"
    )


def _event(name: str, **data: Any) -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(name=name), data=SimpleNamespace(**data))


def _finished(kind: str, name: str, status: str, message: str = "") -> SimpleNamespace:
    node = SimpleNamespace(resource_type=kind, node_name=name)
    result = SimpleNamespace(status=status, message=message)
    return _event("NodeFinished", node_info=node, run_result=result)


def test_dbt_progress_counts_models_and_tests_and_prints_failures() -> None:
    out = io.StringIO()
    progress = NodeProgress("build", Console(out, tty=False, interval=3600))
    progress(_event("ConcurrencyLine", node_count=3))  # dbt leaves unit tests out of this one
    progress(_event("LogStartLine", total=4))
    progress(_finished("model", "stg_a", "success"))
    progress(_finished("unit_test", "stg_a_rule", "pass"))
    progress(_finished("test", "unique_stg_a_id", "fail", "Got 2 results, configured to fail"))
    progress(_event("SomethingElse"))
    progress(object())  # an event it cannot read is ignored: progress never breaks a build
    progress(_finished("test", "not_null_stg_a_id", "pass"))
    assert out.getvalue().splitlines() == [
        "  FAIL test unique_stg_a_id: Got 2 results, configured to fail",
        "  dbt build: 4/4 nodes done (models 1, tests 2, unit tests 1)",
    ]


def test_dbt_progress_bar_on_a_terminal() -> None:
    out = io.StringIO()
    progress = NodeProgress("build", Console(out, tty=True))
    progress(_event("LogStartLine", total=2))
    progress(_finished("model", "m", "success"))
    progress(_finished("test", "t", "pass"))
    assert out.getvalue() == (
        "\r  dbt build [##########----------] 1/2 nodes (models 1)"
        "\r  dbt build [####################] 2/2 nodes (models 1, tests 1)\n"
    )


def test_docs_generate_shows_no_counter() -> None:
    out = io.StringIO()
    progress = NodeProgress("docs", Console(out, tty=False), counter=False)
    progress(_event("LogStartLine", total=1))
    progress(_finished("model", "m", "success"))
    assert out.getvalue() == ""


def test_a_warn_test_is_explained_by_its_meta_else_named_with_the_log() -> None:
    """A warn test's explanation is its config's (or its own) meta.explanation, with {n} its
    failure count; one without is named, with the log to read. Every warn test of the project
    has one: tests/integration/test_dbt_targets.py."""
    text = "{n:,} plays by users not in RDS: kept (KPIs count them), see dim_users"
    in_config = SimpleNamespace(config=SimpleNamespace(meta={"explanation": text}), meta={})
    in_node = SimpleNamespace(config=SimpleNamespace(meta={}), meta={"explanation": text})
    assert explanation(in_config) == explanation(in_node) == text
    assert explanation(SimpleNamespace(config=SimpleNamespace(meta={}), meta={})) is None
    line = warning_line("relationships_x", 313, explained=text)
    assert line == "313 plays by users not in RDS: kept (KPIs count them), see dim_users"
    unknown = warning_line("accepted_values_x", 5, "/w/dbt/logs/dbt.log")
    assert unknown == "5 rows found by warn test accepted_values_x: see /w/dbt/logs/dbt.log"


def test_dbt_console_is_off_and_colourless_unless_a_terminal() -> None:
    assert console_args(tty=False)[:4] == ["--log-level", "none", "--log-level-file", "debug"]
    assert "--no-use-colors" in console_args(tty=False)
    assert "--use-colors" in console_args(tty=True)
    assert "--no-use-colors-file" in console_args(tty=True)
