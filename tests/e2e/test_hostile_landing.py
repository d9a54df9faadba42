"""Keys and files: what a local landing zone may hold besides stream files never
blocks a run, and a driver error never escapes as a traceback. Through the real CLI.

- a symlink (to a file outside the zone, to nowhere, to a folder), a FIFO and a folder named
  like a stream file, under streams/: each run names each one as skipped, with the reason, and
  loads every stream file, also those sorted after them;
- the RDS connection killed mid-extract (its backend terminated): one line, exit 2.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from loaders import rds
from loaders.cli import main as cli
from loaders.config import Settings
from tests.checks import (
    Version,
    assert_marts_match,
    assert_no_problems,
    landing_problems,
    ledger_problems,
)
from tests.kpi_reference import Delivery, compute_kpis

pytestmark = pytest.mark.slow

USERS = "user_id,user_name,user_age,user_country,created_at\n7,Ann,30,DE,2024-01-01\n"
SONGS = (
    "track_id,artists,album_name,track_name,popularity,duration_ms,track_genre\n"
    "t1,Zed;alpha,A,One,50,200000,pop\n"
)
HEADER = "user_id,track_id,listen_time\n"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    src, work = tmp_path / "src", tmp_path / "work"
    src.mkdir()
    (src / "users.csv").write_text(USERS)
    (src / "songs.csv").write_text(SONGS)
    assert cli(["seed", "--from-dir", str(src), "--workdir", str(work)]) == 0
    return work


def test_links_pipes_and_folders_under_streams_are_skipped_by_name_and_block_nothing(
    workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.from_env(workdir=workdir)
    streams = settings.local_landing / "streams"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "real.csv"
    target.write_text(HEADER + "7,t1,2024-01-01 10:00:00\n")
    streams.mkdir(parents=True)
    (streams / "link.csv").symlink_to(target)
    (streams / "broken.csv").symlink_to(tmp_path / "nowhere.csv")
    (streams / "folder-link").symlink_to(elsewhere)
    os.mkfifo(streams / "pipe.csv")
    (streams / "folder.csv").mkdir()
    versions = [
        Version(
            "streams/folder.csv/inner.csv", (HEADER + "7,inner,2024-01-01 11:00:00\n").encode()
        ),
        Version("streams/zz-after.csv", (HEADER + "7,after,2024-01-01 12:00:00\n").encode()),
    ]
    for version in versions:
        (settings.local_landing / version.key).write_bytes(version.data)
    skipped = {
        "streams/link.csv": "symbolic link",
        "streams/broken.csv": "does not exist",
        "streams/folder-link": "symbolic link",
        "streams/pipe.csv": "named pipe",
        "streams/folder.csv": "directory",
    }

    for attempt in ("first run", "second run"):
        code = cli(["run", "--workdir", str(workdir)])
        out, err = capsys.readouterr()
        assert code == 0, f"{attempt}: exit {code}\n{err}\n{out[-2000:]}"
        problems = [
            f"{attempt}: no 'skipped {key}: ...{what}...' line"
            for key, what in skipped.items()
            if not any(
                line.strip().startswith(f"skipped {key}:") and what in line
                for line in out.splitlines()
            )
        ]
        assert_no_problems(problems, f"skipped entries\n{out[-2000:]}")

    assert target.read_text().startswith(HEADER)  # a link's target is never moved or read
    assert all(os.path.lexists(streams / name.split("/", 1)[1]) for name in skipped)
    problems = ledger_problems(settings, versions) + landing_problems(settings, versions)
    assert_no_problems(problems, "files")
    expected = compute_kpis(
        tmp_path / "src" / "users.csv",
        tmp_path / "src" / "songs.csv",
        [Delivery(v.key, v.data) for v in versions],
        datetime.now(),
    )
    assert_marts_match(expected, settings)


def test_the_rds_connection_killed_mid_extract_is_one_line_and_exit_2(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The RDS goes away mid-extract (the backend serving the extract is terminated): a
    psycopg2.OperationalError in the driver: one line naming the step and the error, exit 2,
    no traceback."""
    real = rds.extract_table

    def extract_then_lose_the_server(conn: Any, *args: Any, **kwargs: Any) -> Any:
        with psycopg2.connect(conn.dsn) as other, other.cursor() as cur:
            cur.execute("select pg_terminate_backend(%s)", (conn.get_backend_pid(),))
        return real(conn, *args, **kwargs)

    monkeypatch.setattr(rds, "extract_table", extract_then_lose_the_server)
    code = cli(["run", "--workdir", str(workdir)])
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}\n{err}\n{out[-2000:]}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("music-elt: error: ") and "during extract" in lines[0], err
    assert "OperationalError" in lines[0] and "Traceback" not in out + err
