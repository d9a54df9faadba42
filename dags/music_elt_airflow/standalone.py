"""``make airflow``: ``airflow standalone`` with its log in the Airflow home, one line when the
UI answers (where, the user, where the password is), and a clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HOST, PORT = (
    os.environ.get("AIRFLOW__API__HOST", "127.0.0.1"),
    os.environ.get("AIRFLOW__API__PORT", "8080"),
)


def _ui_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
            return bool(response.status < 500)
    except OSError:
        return False


def main(wait_seconds: float = 180) -> int:
    home = Path(os.environ["AIRFLOW_HOME"])
    log_path = home / "standalone.log"
    url = f"http://{HOST}:{PORT}"
    print(f"starting Airflow (log: {log_path}) ...", flush=True)
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "standalone"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    stop_requested: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: stop_requested.append(signum))
    signal.signal(signal.SIGTERM, lambda signum, _frame: stop_requested.append(signum))
    started = time.monotonic()
    ready = False
    while child.poll() is None and not stop_requested:
        if not ready and _ui_answers(f"{url}/api/v2/monitor/health"):
            ready = True
            passwords = home / "simple_auth_manager_passwords.json.generated"
            print(
                f"Airflow UI ready after {time.monotonic() - started:.0f}s: {url}  user: admin, "
                f"password in {passwords} (Ctrl-C stops it)",
                flush=True,
            )
        elif not ready and time.monotonic() - started > wait_seconds:
            ready = True  # stop polling; keep running
            print(f"the UI did not answer within {wait_seconds:.0f}s; see {log_path}", flush=True)
        time.sleep(1)
    if not stop_requested:
        print(f"Airflow exited with code {child.returncode}; see {log_path}", file=sys.stderr)
        return 1
    print("\nstopping Airflow ...", flush=True)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    print("Airflow stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
