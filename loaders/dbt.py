"""Run dbt on the project in-process, quietly, and summarise what it did.

dbt's full log (debug level, no colour codes) goes to ``<workdir>/dbt/logs/dbt.log``; its own
console output is off. The console shows progress instead, from dbt's events: nodes done out of
the total as a bar on a terminal, a line per quarter otherwise, and each failure as it happens.
The report explains each by-design warning (dbt tests of severity ``warn``) in one line: the
test's ``meta: {explanation: ...}`` in the project's YAML (tests/integration/test_dbt_targets.py
checks that every warn test has one).
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from loaders.config import ConfigError, Settings
from loaders.console import Console, console
from loaders.errors import DbtFailed, one_line

# dbt commands whose nodes the console counts (docs generate, compile, parse stay silent).
_EXECUTING = {"build", "run", "test", "seed", "snapshot"}


@dataclass(frozen=True)
class DbtReport:
    """Counts of what a dbt invocation did, by resource type and status."""

    command: str
    success: bool
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    failures: tuple[str, ...] = ()  # "test not_null_x: Got 3 results" ...
    warnings: tuple[str, ...] = ()  # one line per warn test that found rows: what, where

    def line(self) -> str:
        parts = []
        for kind in sorted(self.counts):
            statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.counts[kind].items()))
            parts.append(f"{kind}s: {statuses}")
        return "; ".join(parts) or "nothing selected"


def explanation(node: Any) -> str | None:
    """A warn test's ``meta.explanation`` (its config's or its own): what its rows mean and
    where to look, with ``{n}`` for their number; None when it has none."""
    for meta in (getattr(node.config, "meta", None), getattr(node, "meta", None)):
        if meta and meta.get("explanation"):
            return str(meta["explanation"])
    return None


def warning_line(
    test_name: str, failures: int, log_file: str = "the dbt log", explained: str | None = None
) -> str:
    """One line saying what a warn test's ``failures`` rows mean (``explained``, the test's
    :func:`explanation`) and where to look."""
    if explained:
        return explained.format(n=failures)
    return f"{failures:,} rows found by warn test {test_name}: see {log_file}"


def dbt_args(settings: Settings, command: Sequence[str]) -> list[str]:
    """The dbt CLI arguments for ``command`` against this run's warehouse and work directory."""
    project = str(settings.dbt_project_dir.resolve())
    return [
        *command,
        "--project-dir",
        project,
        "--profiles-dir",
        project,
        "--target",
        settings.warehouse.kind,
        "--target-path",
        str(settings.dbt_target_path.resolve()),
        "--log-path",
        str(settings.dbt_log_path.resolve()),
        "--threads",
        str(settings.dbt_threads),
    ]


def build_flags(settings: Settings) -> list[str]:
    """The flags of a run's ``dbt build`` (the CLI's and the DAG's): dbt's unit tests stay out
    unless ``MUSIC_ELT_DBT_UNIT_TESTS`` is set. Their inputs are fixed rows, so a production
    build learns nothing from them; dbt's documentation recommends running them in development
    and CI (``make test`` does, on every warehouse) rather than on every production build."""
    return [] if settings.dbt_unit_tests else ["--exclude-resource-type", "unit_test"]


def console_args(*, tty: bool) -> list[str]:
    """dbt's own console off, its log file at debug level without colour codes; colours on
    the console only for a terminal (should the console level ever be raised)."""
    return [
        "--log-level",
        "none",
        "--log-level-file",
        "debug",
        "--no-use-colors-file",
        "--use-colors" if tty else "--no-use-colors",
    ]


@contextmanager
def dbt_environment(settings: Settings) -> Iterator[None]:
    """Set the variables profiles.yml reads, for the duration of one dbt invocation."""
    wanted = {
        **settings.warehouse.dbt_env(),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        "DO_NOT_TRACK": "1",
    }
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class NodeProgress:
    """A dbtRunner callback: counts finished nodes against the total dbt announces, shows them
    on the console and prints each failure or error as it happens."""

    BAR = 20

    def __init__(self, label: str, out: Console, *, counter: bool = True) -> None:
        self.label = label
        self.out = out
        self.counter = counter
        self.total = 0
        self.done: Counter[str] = Counter()

    def __call__(self, event: Any) -> None:
        with contextlib.suppress(Exception):  # progress is cosmetic: never break a build
            self._on(event.info.name, event.data)

    def _on(self, name: str, data: Any) -> None:
        if name == "ConcurrencyLine":
            self.total = max(self.total, int(data.node_count))
        elif name == "LogStartLine":  # its total counts unit tests, ConcurrencyLine's does not
            self.total = max(self.total, int(data.total))
        elif name == "NodeFinished":
            node = data.node_info
            kind = {"unit_test": "unit tests"}.get(node.resource_type)
            self.done[kind or f"{node.resource_type}s"] += 1  # models, tests, exposures, ...
            status = data.run_result.status
            if status in ("error", "fail"):
                message = one_line(data.run_result.message or "", lines=1)
                detail = f": {message}" if message else ""
                self.out.line(f"  {status.upper()} {node.resource_type} {node.node_name}{detail}")
            if self.counter and self.total:
                done = sum(self.done.values())
                self.out.counter(self.text(), done, max(done, self.total))

    def text(self) -> str:
        """The counter line: nodes done of the total, models and tests among them."""
        done = sum(self.done.values())
        total = max(done, self.total, 1)
        parts = ", ".join(f"{kind} {n}" for kind, n in sorted(self.done.items()))
        if self.out.tty:
            filled = self.BAR * done // total
            bar = "#" * filled + "-" * (self.BAR - filled)
            return f"  dbt {self.label} [{bar}] {done}/{total} nodes ({parts})"
        return f"  dbt {self.label}: {done}/{total} nodes done ({parts})"


def _release_duckdb() -> None:
    """dbt-duckdb keeps its database open for the life of the process, and with it the file's
    lock, which would lock every other process (a second run, the dashboard's publisher) out of
    the warehouse after an in-process build. Drop it: the next dbt call opens it again."""
    import gc

    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    DuckDBConnectionManager.close_all_connections()
    gc.collect()


def run_dbt(settings: Settings, command: Sequence[str], *, out: Console = console) -> DbtReport:
    """Run ``dbt <command>`` in this process; raise DbtFailed if it did not succeed.

    dbt's log goes to ``settings.dbt_log_path``; the console (``out``) shows progress.
    """
    from dbt.cli.main import dbtRunner

    if not (settings.dbt_project_dir / "dbt_project.yml").is_file():
        raise ConfigError(
            f"no dbt project at {settings.dbt_project_dir}; set MUSIC_ELT_DBT_PROJECT_DIR"
        )
    settings.dbt_log_path.mkdir(parents=True, exist_ok=True)
    log_file = str(settings.dbt_log_path / "dbt.log")
    progress = NodeProgress(" ".join(command[:1]), out, counter=command[0] in _EXECUTING)
    args = [*dbt_args(settings, command), *console_args(tty=out.tty)]
    with dbt_environment(settings):
        try:
            result = dbtRunner(callbacks=[progress]).invoke(args)
        finally:
            if settings.warehouse.kind == "duckdb":
                _release_duckdb()
    counts: dict[str, Counter[str]] = {}
    failures, warnings = [], []
    for node_result in getattr(result.result, "results", None) or []:
        node = node_result.node
        status = str(node_result.status)
        counts.setdefault(node.resource_type, Counter())[status] += 1
        if status in ("fail", "error"):
            failures.append(f"{node.resource_type} {node.name}: {node_result.message}")
        elif status == "warn":
            failed = int(node_result.failures or 0)
            warnings.append(warning_line(node.name, failed, log_file, explanation(node)))
    report = DbtReport(
        command=" ".join(command),
        success=bool(result.success),
        counts=counts,
        failures=tuple(failures),
        warnings=tuple(warnings),
    )
    if isinstance(result.exception, KeyboardInterrupt):  # Terminated (SIGTERM) is one too
        raise result.exception  # an interrupt, not a dbt failure: the caller says what is left
    if not result.success:
        detail = "; ".join(failures[:5]) or str(result.exception or "")
        raise DbtFailed(f"dbt {report.command} failed: {detail} (full log: {log_file})", report)
    return report
