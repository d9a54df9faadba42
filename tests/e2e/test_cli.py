"""What a newcomer meets first, through the real ``music-elt`` command: ``--version``, a
mistyped work directory, an RDS that does not answer (on a pipe, as in a CI log), and the
README's ``make demo`` output, which must be what a real demo prints."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

MUSIC_ELT = Path(sys.executable).with_name("music-elt")
README = Path(__file__).resolve().parents[2] / "README.md"


def music_elt(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``music-elt ARGS`` with its output piped, in an environment without the developer's
    ``MUSIC_ELT_*`` / ``WAREHOUSE_*`` settings plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MUSIC_ELT_", "WAREHOUSE_"))}
    return subprocess.run(
        [str(MUSIC_ELT), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_version_names_the_package_and_dbt() -> None:
    done = music_elt("--version")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"music-elt \S+ \(dbt-core 1\.\d+\.\d+, Python 3\.\d+\.\d+\)\n", done.stdout
    )


def test_a_mistyped_workdir_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "x"
    done = music_elt("run", "--workdir", str(missing))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "has no embedded RDS: seed it first (music-elt seed --from-dir" in done.stderr
    assert not (tmp_path / "nonexistent").exists()  # no directory, no pgdata, no warehouse


def test_an_unreachable_rds_waits_quietly_and_says_what_to_check(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dsn = f"host=127.0.0.1 port={port} dbname=music user=etl password=hunter2"
    done = music_elt(
        "run",
        "--workdir",
        str(tmp_path / "w"),
        MUSIC_ELT_RDS_DSN=dsn,
        MUSIC_ELT_RDS_WAIT_SECONDS="5",
    )
    assert done.returncode == 2, done.stderr
    waiting = [line for line in done.stdout.splitlines() if "waiting for the RDS" in line]
    assert len(waiting) == 1, done.stdout  # retried for 5 s, one line at most every 10 s
    assert "5s left" in waiting[0]
    (last,) = done.stderr.splitlines()
    assert last.startswith("music-elt: error: cannot reach the RDS database at ")
    assert "(retried for 5s)" in last
    assert "Check that it is running and reachable" in last
    assert "hunter2" not in done.stdout + done.stderr


def _readme_sample() -> tuple[int, list[str]]:
    """The README's ``make demo`` sample: the line count it claims on a terminal, and the lines
    shown (without the ``...`` elision)."""
    text = README.read_text()
    lines_on_screen = re.search(r"\((\d+) lines on a terminal;", text)
    assert lines_on_screen, "the README no longer says how long the demo output is"
    block = re.search(r"Its output fits on one screen.*?```\n(.*?)```", text, re.S)
    assert block, "the README's demo sample is missing"
    lines = [line for line in block.group(1).splitlines() if line != "..."]
    return int(lines_on_screen.group(1)), lines


def _on_screen(printed: list[str]) -> list[str]:
    """The lines a terminal keeps: piped, a counter (``[i/n] ...``, ``i/n nodes done``) also
    prints its state every 10 s before it completes; on a terminal that is rewritten in place."""
    counter = re.compile(r"^\s*\[(\d+)/(\d+)\]|(\d+)/(\d+) nodes done")

    def unfinished(line: str) -> bool:
        match = counter.search(line)
        if match is None:
            return False
        done, total = (int(n) for n in match.groups() if n is not None)
        return done < total

    return [line for line in printed if not unfinished(line)]


@pytest.mark.slow
def test_the_readme_demo_sample_is_what_make_demo_prints(tmp_path: Path) -> None:
    """``music-elt demo`` as ``make demo`` runs it (100,000 plays, seed 42). Its output has the
    README's line count (on a terminal) and every line of the README's sample; a second demo finds
    nothing new and leaves the docs site alone (nothing was built since it was generated)."""
    work = tmp_path / "demo"
    first = music_elt("demo", "--workdir", str(work))
    assert first.returncode == 0, first.stderr
    printed = first.stdout.splitlines()
    count, sample = _readme_sample()
    missing = [line for line in sample if line not in printed]
    assert not missing, "README sample lines not printed by the demo:\n" + "\n".join(missing)
    on_screen = len(_on_screen(printed))
    assert on_screen == count, f"the demo shows {on_screen} lines, the README says {count}"
    assert "==> dbt docs generate" in printed

    again = music_elt("demo", "--workdir", str(work))
    assert again.returncode == 0, again.stderr
    assert "nothing to do: skipping load, dbt build, archive and publish" in again.stdout
    assert "==> dbt docs generate" not in again.stdout
