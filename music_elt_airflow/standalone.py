"""``make airflow``: ``airflow standalone`` with its log in the Airflow home, one line when the
UI answers (where, the user, where the password is), and a clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

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

    def stop(*_: object) -> None:
        print("\nstopping Airflow ...", flush=True)
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
        print("Airflow stopped", flush=True)
        raise SystemExit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    started = time.monotonic()
    while not _ui_answers(f"{url}/api/v2/monitor/health"):
        if child.poll() is not None:
            print(f"Airflow exited with code {child.returncode}; see {log_path}", file=sys.stderr)
            return 1
        if time.monotonic() - started > wait_seconds:
            print(f"the UI did not answer within {wait_seconds:.0f}s; see {log_path}")
            break
        time.sleep(1)
    else:
        passwords = home / "simple_auth_manager_passwords.json.generated"
        print(
            f"Airflow UI ready after {time.monotonic() - started:.0f}s: {url}  user: admin, "
            f"password in {passwords} (Ctrl-C stops it)",
            flush=True,
        )
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
