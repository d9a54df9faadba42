"""Run dbt on the project in-process and summarise what it did."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from loaders.config import ConfigError, Settings


class DbtFailed(RuntimeError):
    """dbt ran and something failed (a model error or a failing test)."""

    def __init__(self, message: str, report: DbtReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class DbtReport:
    """Counts of what a dbt invocation did, by resource type and status."""

    command: str
    success: bool
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    failures: tuple[str, ...] = ()  # "test not_null_x: Got 3 results" ...

    def line(self) -> str:
        parts = []
        for kind in sorted(self.counts):
            statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.counts[kind].items()))
            parts.append(f"{kind}s: {statuses}")
        return "; ".join(parts) or "nothing selected"


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


def run_dbt(settings: Settings, command: Sequence[str]) -> DbtReport:
    """Run ``dbt <command>`` in this process; raise DbtFailed if it did not succeed.

    dbt prints its own progress (one line per node) as it goes.
    """
    from dbt.cli.main import dbtRunner

    if not (settings.dbt_project_dir / "dbt_project.yml").is_file():
        raise ConfigError(
            f"no dbt project at {settings.dbt_project_dir}; set MUSIC_ELT_DBT_PROJECT_DIR"
        )
    settings.dbt_log_path.mkdir(parents=True, exist_ok=True)
    with dbt_environment(settings):
        result = dbtRunner().invoke(dbt_args(settings, command))
    counts: dict[str, Counter[str]] = {}
    failures = []
    for node_result in getattr(result.result, "results", None) or []:
        node = node_result.node
        status = str(node_result.status)
        counts.setdefault(node.resource_type, Counter())[status] += 1
        if status in ("fail", "error"):
            failures.append(f"{node.resource_type} {node.name}: {node_result.message}")
    report = DbtReport(
        command=" ".join(command),
        success=bool(result.success),
        counts=counts,
        failures=tuple(failures),
    )
    if not result.success:
        detail = "; ".join(failures[:5]) or str(result.exception or "see the dbt log above")
        raise DbtFailed(f"dbt {report.command} failed: {detail}", report)
    return report
