"""One run at a time: a lock per work directory, and per PostgreSQL warehouse.

The work directory's lock is an exclusive ``flock`` on ``<workdir>/run.lock``, which also records
who holds it (pid, host, start, command). The kernel releases it when the holder exits, even by
kill -9, so a crashed run never leaves a stale lock. A PostgreSQL warehouse is shared by runs on
other machines: the run also takes a session advisory lock there (released with the session).
Redshift has no advisory locks: there the work directory's lock applies, and the ledger's
``LOCK`` serializes loads.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from loaders.config import Settings
from loaders.errors import RunLocked
from loaders.warehouse import open_warehouse


@contextmanager
def run_lock(settings: Settings, command: str = "music-elt run") -> Iterator[None]:
    """Hold the run locks for the duration of the block; RunLocked (one line naming the holder)
    when another run has them."""
    path = settings.workdir / "run.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(
                f"another run holds {path} ({_holder(fd)}): wait for it to finish, "
                "or stop it, then run again"
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        with open_warehouse(settings) as wh:
            wh.setup()  # the raw schemas and the ledger exist from the first step on
            with wh.run_lock(holder):
                yield
    finally:
        os.close(fd)  # releases the flock


def _holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        holder = {}
    if not holder:
        return "holder unknown"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}: " + str(
        holder.get("command", "")
    )


if __name__ == "__main__":  # pragma: no cover - manual check: hold the lock until Enter
    with run_lock(Settings.from_env(), "python -m loaders.runlock"):
        sys.stdin.readline()
