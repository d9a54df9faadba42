"""Drive a real ``music-elt run`` as an operator would, and break it.

:class:`Run` starts ``.venv/bin/music-elt run --workdir W`` as a subprocess with its standard
output on a pseudo-terminal, so every progress counter (``[i/n]`` per file, dbt's node count)
arrives as it happens (piped, the CLI prints counters only when they complete). A test waits
for a line, then sends a signal. :class:`Stack` is one work directory with its RDS (a database
on the tests' PostgreSQL server), its landing zone (local, or S3 on the moto server) and the
environment a subprocess and an in-process run both see. :meth:`Stack.assert_recovered` checks
what every fault-injection test must hold after a plain rerun.
"""

from __future__ import annotations

import contextlib
import io
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg2

from loaders import pipeline
from loaders.cli import main as cli
from loaders.config import Settings
from loaders.demo.seed import seed_table
from tests.checks import (
    Version,
    assert_no_problems,
    landing_problems,
    ledger_problems,
    mart_problems,
    query,
    raw_problems,
)
from tests.kpi_reference import Delivery, KpiResult, classify_versions, compute_kpis

MUSIC_ELT = Path(sys.executable).with_name("music-elt")
# Progress lines the triggers wait for (see loaders/console.py, loaders/dbt.py, loaders/rds.py).
EXTRACTING = re.compile(r"^\s*users: [\d,]+ rows extracted")
FILE_LOADED = re.compile(r"^\s*\[(\d+)/(\d+)\] streams/")
DBT_NODES = re.compile(r"dbt build\b.*?(\d+)/(\d+) nodes")
_SPLIT = re.compile(r"[\r\n]+")


class Trigger:
    """An output line to wait for, with a name for failure messages."""

    def __init__(self, name: str, accept: Callable[[str], bool]) -> None:
        self.name, self.accept = name, accept

    def __call__(self, line: str) -> bool:
        return self.accept(line)

    def __repr__(self) -> str:
        return self.name


def file_loaded(n: int) -> Trigger:
    """The load line of the ``n``-th stream file."""

    def matches(line: str) -> bool:
        found = FILE_LOADED.match(line)
        return bool(found) and int(found[1]) >= n

    return Trigger(f"the load line of stream file {n}", matches)


def _dbt_halfway(line: str) -> bool:
    found = DBT_NODES.search(line)
    return bool(found) and int(found[2]) > 0 and int(found[1]) * 2 >= int(found[2])


dbt_halfway = Trigger("dbt reporting half of its nodes done", _dbt_halfway)
extracting = Trigger("the first batch of users extracted", EXTRACTING.search)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Run:
    """One ``music-elt run`` subprocess, its output read as it comes."""

    def __init__(self, stack: Stack, *args: str, wrapper: Sequence[str] = ()) -> None:
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [*wrapper, str(MUSIC_ELT), "run", "--workdir", str(stack.workdir), *args],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.PIPE,
            env=stack.subprocess_env(),
            cwd=stack.workdir.parent,
            start_new_session=True,  # our signals only, never the test session's
            # a shell runs background jobs with SIGINT ignored, and children inherit that:
            # the run under test must see Ctrl-C as a person's terminal delivers it
            preexec_fn=_default_sigint,
        )
        os.close(slave)
        stack.runs.append(self)
        self.lines: list[str] = []
        self._stderr = b""
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read_pty, args=(master,), daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_pty(self, fd: int) -> None:
        pending = ""
        try:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                *complete, pending = _SPLIT.split(pending + chunk.decode(errors="replace"))
                with self._changed:
                    self.lines += [line for line in complete if line.strip()]
                    self._changed.notify_all()
        finally:
            os.close(fd)
            with self._changed:
                if pending.strip():
                    self.lines.append(pending)
                self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self._stderr = self.proc.stderr.read()

    def wait_for(self, trigger: Callable[[str], bool], timeout: float) -> str:
        """The first output line ``trigger`` accepts; fails if the run ends or times out first."""
        accept = trigger
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if accept(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._readers[0].is_alive()):
                    break
                self._changed.wait(min(left, 0.2))
        self.kill()
        code, out, err = self.finish()
        raise AssertionError(
            f"no line matching {trigger!r} within {timeout:.0f}s (run exited {code}):\n"
            f"{condensed(out)}\n{err[-3000:]}"
        )

    def send(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.send(signal.SIGKILL)

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """Wait for the run to end: exit code (negative: killed by that signal), output lines,
        standard error."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.wait(10)
            raise AssertionError(f"music-elt run did not finish within {timeout:.0f}s") from None
        finally:
            for reader in self._readers:
                reader.join(10)
        return code, "\n".join(self.lines), self._stderr.decode(errors="replace")

    def stopped_by(self, sig: int, trigger: Callable[[str], bool]) -> str:
        """Wait for ``trigger``, send ``sig``; the line that triggered it."""
        line = self.wait_for(trigger, timeout=120)
        self.send(sig)
        return line

    def killed_at(self, trigger: Callable[[str], bool]) -> str:
        """kill -9 when ``trigger`` appears; checks the run died of it."""
        line = self.stopped_by(signal.SIGKILL, trigger)
        code, out, err = self.finish()
        assert code == -signal.SIGKILL, (
            f"expected death by SIGKILL, exit {code}:\n{condensed(out)}\n{err}"
        )
        return line


@dataclass
class Stack:
    """A work directory, its RDS database, its landing zone and the files delivered to it."""

    workdir: Path
    source: Path  # users.csv, songs.csv (and streams/ of the generated data)
    env: dict[str, str]  # what this stack sets (subprocess and in-process runs alike)
    landing_kind: str  # local | s3
    deliveries: list[Version] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env, workdir=self.workdir)

    def subprocess_env(self) -> dict[str, str]:
        """The test process's environment without any pipeline setting, plus this stack's."""
        base = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("MUSIC_ELT_", "WAREHOUSE_", "PYTEST_"))
        }
        return {**base, **self.env, "COLUMNS": "200", "LINES": "50"}

    def seed_rds(self, db_dsn: str) -> None:
        with psycopg2.connect(db_dsn) as conn:
            for table in ("users", "songs"):
                seed_table(conn, table, self.source / f"{table}.csv")
        conn.close()

    def deliver(self, key: str, data: bytes) -> Version:
        """Write a stream file into the input prefix, as a producer does."""
        staged = self.workdir.parent / "staged" / f"{len(self.deliveries):04d}"
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(data)
        pipeline.landing_store(self.settings).put(key, staged)
        version = Version(key, data)
        self.deliveries.append(version)
        return version

    def deliver_generated(self) -> list[Version]:
        files = sorted((self.source / "streams").iterdir())
        return [self.deliver(f"streams/{path.name}", path.read_bytes()) for path in files]

    def start(self, *args: str, wrapper: Sequence[str] = ()) -> Run:
        return Run(self, *args, wrapper=wrapper)

    def run_ok(self, wrapper: Sequence[str] = ()) -> str:
        """One plain ``music-elt run`` subprocess to the end (run by ``wrapper``, e.g. a
        ``faketime`` command line, when given); must exit 0. Its output."""
        code, out, err = self.start(wrapper=wrapper).finish()
        assert code == 0, f"music-elt run exited {code}:\n{condensed(out)}\n{err[-4000:]}"
        assert "Traceback" not in out + err, f"{condensed(out)}\n{err}"
        return out

    def rerun(self) -> str:
        """A plain ``music-elt run`` through ``loaders.cli.main`` in this process (the CLI's
        own entry point; cheaper than a subprocess, since this worker imported dbt already),
        in the stack's environment; must exit 0. Its output."""
        out, err = io.StringIO(), io.StringIO()
        with (
            mock.patch.dict(os.environ, self.env),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            code = cli(["run", "--workdir", str(self.workdir)])
        shown = f"{condensed(out.getvalue())}\n{err.getvalue()}"
        assert code == 0, f"music-elt run exited {code}:\n{shown}"
        assert "Traceback" not in shown, shown
        return out.getvalue()

    def reference(self) -> KpiResult:
        return compute_kpis(
            self.source / "users.csv",
            self.source / "songs.csv",
            [Delivery(v.key, v.data) for v in self.deliveries],
            datetime.now(),
        )

    def current_and_superseded(self) -> tuple[list[Version], list[Version], list[Version]]:
        """The versions that count, the superseded ones and the unloadable re-deliveries (the
        reference's rule)."""
        found = classify_versions([Delivery(v.key, v.data) for v in self.deliveries])
        as_version = {Delivery(v.key, v.data): v for v in self.deliveries}
        current, superseded, unloadable = ([as_version[d] for d in group] for group in found)  # type: ignore[index]
        return current, superseded, unloadable

    def assert_recovered(self) -> None:
        """What every rerun after a fault must leave: the marts equal tests/kpi_reference.py
        over the latest version of each file; each file version archived or quarantined
        exactly once; the ledger holds each version once (an earlier one marked superseded);
        raw rows equal file rows; the RDS tables whole. Lists every deviation at once."""
        settings = self.settings
        expected = self.reference()
        problems = mart_problems(expected, settings)
        (kept,) = query(settings, "select count(*) from marts.fct_listens")[0]
        if kept != expected.kept:
            problems.append(f"marts.fct_listens: {kept} plays, reference {expected.kept}")
        current, superseded, unloadable = self.current_and_superseded()
        refused = [v for v in current if v.key in expected.rejected_files] + unloadable
        loaded = [v for v in current if v not in refused] + superseded
        versions = sorted(set(current) | set(superseded), key=self.deliveries.index)
        problems += ledger_problems(settings, loaded, refused, superseded)
        problems += landing_problems(settings, loaded, refused)
        problems += raw_problems(settings, [v for v in versions if v not in refused])
        for table in ("users", "songs"):
            with (self.source / f"{table}.csv").open() as handle:
                rows = sum(1 for _ in handle) - 1
            (count,) = query(settings, f"select count(*) from raw_rds.{table}")[0]
            if count != rows:
                problems.append(f"raw_rds.{table}: {count} rows, the RDS has {rows}")
        assert_no_problems(problems, "after the rerun")

    def stop_all(self) -> None:
        for run in self.runs:
            if run.proc.poll() is None:
                run.kill()
                run.proc.wait(10)


def postgres_warehouse_env(db: dict[str, Any]) -> dict[str, str]:
    """The variables that put a stack's warehouse on the PostgreSQL database ``db``."""
    return {
        "MUSIC_ELT_TARGET": "postgres",
        "WAREHOUSE_HOST": db["host"],
        "WAREHOUSE_PORT": str(db["port"]),
        "WAREHOUSE_USER": db["user"],
        "WAREHOUSE_DBNAME": db["dbname"],
    }


def condensed(output: str, tail: int = 40) -> str:
    """A run's output for a failure message: each burst of counter lines (files loaded, dbt
    nodes) reduced to its last line, then the last ``tail`` lines."""
    lines: list[str] = []
    for line in output.splitlines():
        counter = FILE_LOADED.match(line) or DBT_NODES.search(line)
        previous = lines[-1] if lines else ""
        if counter and (FILE_LOADED.match(previous) or DBT_NODES.search(previous)):
            lines[-1] = line
        else:
            lines.append(line)
    return "\n".join(lines[-tail:])


def one_line_stderr(err: str) -> str:
    """The single non-empty line a run printed on standard error (fails otherwise)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    return lines[0]


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text


def rds_extract_runs(settings: Settings) -> set[str]:
    """The run folders extraction wrote under rds/<table>/."""
    landing = pipeline.landing_store(settings)
    return {obj.key.split("/")[2] for obj in landing.list("rds/") if obj.key.count("/") >= 3}


def load_ids(settings: Settings) -> set[str]:
    return {
        str(load_id)
        for (load_id,) in query(settings, "select distinct load_id from raw_meta.load_ledger")
    }


def run_id_of(output: str) -> str:
    found = re.search(r"^run (\S+)", output, re.MULTILINE)
    return found[1] if found else ""


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()
