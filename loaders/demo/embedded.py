"""The RDS stand-in of the embedded stack: PostgreSQL 16 from the ``pgserver`` wheel.

The server's data lives in the work directory (``Settings.pgdata``); it starts in about a second
with no install and never outlives the processes that use it. ``pgserver`` stops it when the
last process holding a handle exits normally; a process killed with ``kill -9`` runs no exit
code, so each process that starts or attaches to the server also starts a small watchdog
(``python -m loaders.demo.embedded --watch PID PGDATA``, in its own session) that waits for
that process to end, then stops the server unless another live process still holds a handle.
The next run also forgets handles of processes that no longer exist, so it reuses a server a
killed run left and stops it when it is done.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from loaders.config import ConfigError

MISSING_EXTRA = (
    "the embedded PostgreSQL (no MUSIC_ELT_RDS_DSN) needs the 'embedded' extra: "
    "pip install 'music-elt[embedded]', or set MUSIC_ELT_RDS_DSN to a real database"
)
HANDLES_FILE = ".handle_pids.json"  # pgserver's list of the processes holding a handle
_watched: set[Path] = set()


def embedded_server(pgdata: Path) -> Any:
    """Start (or attach to) the pgserver PostgreSQL in ``pgdata``; it stops with the last
    process using it, also when that process is killed.

    Raises ConfigError with what to install when ``pgserver`` is missing.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
        try:
            import pgserver
            from pgserver.postgres_server import PostgresServer
        except ImportError:
            raise ConfigError(MISSING_EXTRA) from None

        pgdata = pgdata.resolve()
        pgdata.mkdir(parents=True, exist_ok=True)
        if pgdata not in _watched:  # before the server starts: a kill at any moment is seen
            _watched.add(pgdata)
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "loaders.demo.embedded",
                    "--watch",
                    str(os.getpid()),
                    str(pgdata),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a signal to the run's process group does not reach it
                close_fds=True,
            )
        with PostgresServer._lock:
            _live_handles(pgdata)  # a run killed with kill -9 left its handle behind
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    return server


def _live_handles(pgdata: Path, *, gone: int | None = None) -> list[int]:
    """The processes in pgserver's handle list that still run (``gone`` excluded); the list
    is rewritten to hold only those. Call it holding pgserver's inter-process lock."""
    import psutil
    from pgserver.utils import DiskList

    handles = DiskList(pgdata / HANDLES_FILE)
    alive = [pid for pid in handles.get() if pid != gone and _running(psutil, pid)]
    if alive != handles.get():
        handles.put(alive)
    return alive


def _running(psutil: Any, pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def watch(pid: int, pgdata: Path, *, poll_seconds: float = 0.5) -> None:
    """Wait for process ``pid`` to end, then stop the server in ``pgdata`` unless another live
    process holds a handle on it (the body of the watchdog process)."""
    import psutil
    from pgserver import _commands
    from pgserver.postgres_server import PostgresServer
    from pgserver.utils import PostmasterInfo

    while _running(psutil, pid):
        time.sleep(poll_seconds)
    pg_ctl = _commands.__dict__["pg_ctl"]  # made at import, one per binary of the wheel
    user = "pgserver" if os.name == "posix" and os.geteuid() == 0 else None
    for _ in range(10):  # a run killed while starting the server: its pid file comes soon
        with PostgresServer._lock:  # held briefly: other runs start or attach meanwhile
            if _live_handles(pgdata, gone=pid):
                return  # another process uses the server: it stops it
            info = PostmasterInfo.read_from_pgdata(pgdata)
            if info is not None and info.is_running():
                try:
                    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=30)
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                    if info.process is not None and info.process.is_running():
                        info.process.terminate()
                return
        time.sleep(poll_seconds)


if __name__ == "__main__":  # the watchdog: python -m loaders.demo.embedded --watch PID PGDATA
    if len(sys.argv) == 4 and sys.argv[1] == "--watch":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            watch(int(sys.argv[2]), Path(sys.argv[3]))
