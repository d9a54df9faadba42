"""One writer per warehouse: the run lock that the CLI and every Airflow task that writes take.

A run lock belongs to the warehouse, not to a machine, so runs started anywhere (a cron job, a
laptop, Airflow workers that share nothing) exclude each other:

- DuckDB: an exclusive ``flock`` on ``<warehouse file>.lock`` beside the DuckDB file (the file is
  local to one machine anyway). The kernel releases it when the holder exits, even by kill -9.
- PostgreSQL: a session advisory lock, released when the holder's connection closes (also when
  its process dies).
- Redshift has no advisory locks: a row in ``raw_meta.run_lock`` with a lease on the
  warehouse's own clock, renewed by the holder every :data:`LEASE_RENEW_SECONDS`; a holder that
  died stops renewing and its lease runs out after :data:`LEASE_SECONDS`.

The second comer waits up to ``MUSIC_ELT_LOCK_WAIT_SECONDS``, saying so at most every 10 s, then
raises :class:`~loaders.errors.RunLocked` naming the holder, before it changed anything.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from loaders.config import Settings
from loaders.errors import RunLocked
from loaders.warehouse import PostgresWarehouse, open_warehouse

POSTGRES_LOCK_KEY = 7_143_960_211  # pg_try_advisory_lock key of the music-elt run lock
LOCK_TABLE = "raw_meta.run_lock"
LEASE_SECONDS = 300
LEASE_RENEW_SECONDS = 60
_POLL_SECONDS = 1.0
_SAY_EVERY_SECONDS = 10.0

Progress = Callable[[str], None]


def holder_description(command: str) -> dict[str, Any]:
    """Who takes the lock: pid, host, start (UTC) and the command or task."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": command,
    }


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "holder unknown"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}: "
        f"{holder.get('command', '')}"
    )


@contextmanager
def run_lock(
    settings: Settings,
    command: str = "music-elt run",
    *,
    wait_seconds: float | None = None,
    progress: Progress = print,
) -> Iterator[None]:
    """Hold the warehouse's run lock for the block. Waits up to ``wait_seconds`` (default: the
    setting ``MUSIC_ELT_LOCK_WAIT_SECONDS``) for another holder, then raises RunLocked."""
    wait = settings.lock_wait_seconds if wait_seconds is None else wait_seconds
    holder = holder_description(command)
    lock = _LOCKS[settings.warehouse.kind](settings, holder)
    deadline = time.monotonic() + max(0.0, wait)
    said = 0.0
    while True:
        other = lock.try_acquire()
        if other is None:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            raise RunLocked(
                f"another run holds the run lock of {lock.where} ({other}): wait for it to "
                "finish, or stop it, then run again"
            )
        if time.monotonic() - said >= _SAY_EVERY_SECONDS:
            progress(
                f"  waiting for the run lock of {lock.where}, held by {other} ({left:.0f}s left)"
            )
            said = time.monotonic()
        time.sleep(min(_POLL_SECONDS, left))
    try:
        yield
    finally:
        lock.release()


class _FileLock:
    """DuckDB: flock on a file beside the warehouse file, which records its holder."""

    def __init__(self, settings: Settings, holder: dict[str, Any]) -> None:
        duckdb_path = settings.warehouse.duckdb_path
        self.path = duckdb_path.with_name(duckdb_path.name + ".lock")
        self.where = f"the DuckDB warehouse {duckdb_path}"
        self.holder = holder
        self.fd: int | None = None

    def try_acquire(self) -> str | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            os.close(fd)
            return _describe(holder)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.holder).encode(), 0)
        self.fd = fd
        return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None


class _AdvisoryLock:
    """PostgreSQL: a session advisory lock on a connection of its own, held for the block."""

    def __init__(self, settings: Settings, holder: dict[str, Any]) -> None:
        w = settings.warehouse
        self.where = f"the {w.kind} warehouse {w.dbname} on {w.host}:{w.port}"
        self.settings = settings
        self.wh: PostgresWarehouse | None = None

    def try_acquire(self) -> str | None:
        wh = open_warehouse(self.settings)
        assert isinstance(wh, PostgresWarehouse)
        wh.__enter__()
        with wh.transaction() as cur:
            cur.execute("select pg_try_advisory_lock(%s)", (POSTGRES_LOCK_KEY,))
            (locked,) = cur.fetchone()
            row = None
            if not locked:
                cur.execute(
                    "select a.pid, a.client_addr, a.application_name, a.backend_start "
                    "from pg_locks l join pg_stat_activity a on a.pid = l.pid "
                    "where l.locktype = 'advisory' and l.objid = %s and l.granted",
                    (POSTGRES_LOCK_KEY & 0xFFFFFFFF,),
                )
                row = cur.fetchone()
        if locked:
            self.wh = wh
            return None
        wh.__exit__(None, None, None)
        if row is None:
            return "holder unknown"
        return (
            f"backend pid {row[0]} from {row[1] or 'a local socket'} "
            f"({row[2] or 'no application name'}) since {row[3]:%Y-%m-%d %H:%M:%S}"
        )

    def release(self) -> None:
        if self.wh is not None:
            self.wh.__exit__(None, None, None)  # closing the session releases the lock
            self.wh = None


class _LeaseLock:
    """Redshift: one row in ``raw_meta.run_lock`` with a lease on the warehouse's clock, taken
    under a table lock and renewed by a background thread while held."""

    now_sql = "getdate()"  # Redshift; the tests run this class on PostgreSQL with now()

    def __init__(self, settings: Settings, holder: dict[str, Any]) -> None:
        w = settings.warehouse
        self.where = f"the {w.kind} warehouse {w.dbname} on {w.host}:{w.port}"
        self.settings = settings
        self.holder = json.dumps(holder)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._set_up = False

    def _lease(self) -> str:
        return f"{self.now_sql} + interval '{LEASE_SECONDS} seconds'"

    def try_acquire(self) -> str | None:
        with open_warehouse(self.settings) as wh:
            if not self._set_up:
                wh.setup()  # raw_meta and the ledger exist from the first step on
                with wh.transaction() as cur:
                    cur.execute(
                        f"create table if not exists {LOCK_TABLE} "
                        f"(holder {wh.text_type}, expires_at timestamp)"
                    )
                self._set_up = True
            with wh.transaction() as cur:
                cur.execute(f"lock {LOCK_TABLE}")
                cur.execute(f"delete from {LOCK_TABLE} where expires_at < {self.now_sql}")
                cur.execute(f"select holder from {LOCK_TABLE}")
                row = cur.fetchone()
                if row is None:
                    cur.execute(
                        f"insert into {LOCK_TABLE} (holder, expires_at) "
                        f"values (%s, {self._lease()})",
                        (self.holder,),
                    )
        if row is not None:
            try:
                return _describe(json.loads(row[0]))
            except ValueError:
                return "holder unknown"
        self._renewer = threading.Thread(target=self._renew, daemon=True, name="run-lock lease")
        self._renewer.start()
        return None

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_RENEW_SECONDS):
            try:
                with open_warehouse(self.settings) as wh, wh.transaction() as cur:
                    cur.execute(
                        f"update {LOCK_TABLE} set expires_at = {self._lease()} where holder = %s",
                        (self.holder,),
                    )
            except Exception as exc:  # the next renewal tries again; the lease is long
                print(f"run lock: lease not renewed ({exc})", file=sys.stderr)

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        with open_warehouse(self.settings) as wh, wh.transaction() as cur:
            cur.execute(f"delete from {LOCK_TABLE} where holder = %s", (self.holder,))


_LOCKS: dict[str, Callable[[Settings, dict[str, Any]], Any]] = {
    "duckdb": _FileLock,
    "postgres": _AdvisoryLock,
    "redshift": _LeaseLock,
}


if __name__ == "__main__":  # pragma: no cover - manual check: hold the lock until Enter
    with run_lock(Settings.from_env(), "python -m loaders.runlock"):
        print("holding the run lock until Enter", flush=True)
        sys.stdin.readline()
