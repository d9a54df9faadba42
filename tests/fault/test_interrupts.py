"""Interrupts, a concurrent run and an unreachable or malformed RDS, as an operator meets them:
exit codes, the one line on standard error, no traceback, and a next run that recovers.

Each test collects every deviation it sees before failing, so one failure lists them all.
"""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

import pytest

from tests.fault.harness import (
    Stack,
    Trigger,
    condensed,
    dbt_halfway,
    file_loaded,
    load_ids,
    rds_extract_runs,
    run_id_of,
    wait_until,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow]


def stderr_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def exit_problems(code: int, expected: int, out: str, err: str) -> list[str]:
    """How a stopped run's exit differs from: exit ``expected``, exactly one line on standard
    error in the CLI's voice, no traceback anywhere, no advice to fix the data."""
    problems = []
    if code != expected:
        shown = f"killed by signal {-code} (no handler)" if code < 0 else f"exit code {code}"
        problems.append(f"{shown}, expected exit code {expected}")
    lines = stderr_lines(err)
    if len(lines) != 1 or not lines[0].startswith("music-elt:"):
        problems.append(f"{len(lines)} lines on stderr, expected one 'music-elt: ...' line")
    if "Traceback" in out + err:
        problems.append("a traceback was printed")
    if "fix the data" in err:
        problems.append("it advises to fix the data (nothing is wrong with the data)")
    if problems:
        problems.append(f"stderr was:\n{err[-2500:]}")
    return problems


@pytest.mark.parametrize(
    ("sig", "code", "moment"),
    [
        (signal.SIGINT, 130, "load"),
        (signal.SIGINT, 130, "dbt"),
        (signal.SIGTERM, 143, "dbt"),
    ],
    ids=["SIGINT-load", "SIGINT-dbt", "SIGTERM-dbt"],
)
def test_interrupt_exits_with_one_line_and_the_rerun_recovers(
    local_stack: Stack, sig: int, code: int, moment: str
) -> None:
    """Ctrl-C (SIGINT) and SIGTERM during load or dbt: exit 130 / 143 with one line saying what
    state is left, no traceback and no advice to fix the data; the next plain run recovers."""
    stack = local_stack
    stack.deliver_generated()
    run = stack.start()
    run.stopped_by(sig, file_loaded(2) if moment == "load" else dbt_halfway)
    got, out, err = run.finish(timeout=60)
    problems = exit_problems(got, code, out, err)
    try:
        stack.rerun()
        stack.assert_recovered()
    except AssertionError as exc:
        problems.append(f"the rerun did not recover: {exc}")
    assert not problems, "\n".join(problems)


def test_a_concurrent_run_exits_2_naming_the_holder_before_touching_anything(
    local_stack: Stack,
) -> None:
    """A second `music-elt run` while one is running exits 2 with one line naming the run
    that holds the lock, before it extracts or loads anything (no new RDS extract folder). The
    first run finishes undisturbed."""
    stack = local_stack
    stack.deliver_generated()
    first = stack.start()
    first.wait_for(file_loaded(1), timeout=120)  # loads and the whole dbt build still to come
    extracted = rds_extract_runs(stack.settings)
    stack.env["MUSIC_ELT_LOCK_WAIT_SECONDS"] = "2"  # it waits that long for the lock, then stops
    second = stack.start()
    code, out, err = second.finish(timeout=90)
    first_code, first_out, first_err = first.finish()

    problems = exit_problems(code, 2, out, err)
    holder = run_id_of(first_out)
    line = stderr_lines(err)[0] if stderr_lines(err) else ""
    if str(first.pid) not in line and not (holder and holder in line):
        problems.append(f"the line does not name the holder (pid {first.pid}, run {holder})")
    if rds_extract_runs(stack.settings) != extracted:
        problems.append("the second run extracted the RDS tables")
    if "rows extracted" in out or "==> load" in out:
        problems.append(f"the second run went on to extract or load:\n{condensed(out, 12)}")
    if first_code != 0:
        problems.append(f"the first run exited {first_code}:\n{first_err[-1500:]}")
    else:
        if load_ids(stack.settings) != {holder}:
            problems.append(f"loads by other runs than {holder}: {load_ids(stack.settings)}")
        try:
            stack.assert_recovered()
        except AssertionError as exc:
            problems.append(f"the first run's result is wrong: {exc}")
    assert not problems, "\n".join(problems)


def test_the_lock_of_a_killed_run_does_not_block_the_next(local_stack: Stack) -> None:
    """A run killed with -9 cannot release its lock: the next run must see that the holder is
    gone and proceed (a stale lock would stop the pipeline for good)."""
    stack = local_stack
    stack.deliver_generated()
    stack.start().killed_at(file_loaded(1))
    stack.rerun()
    stack.assert_recovered()


def unreachable_dsn() -> str:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"host=127.0.0.1 port={port} dbname=music user=etl connect_timeout=2"


def bare_stack(tmp_path: Path, dsn: str) -> Stack:
    work = tmp_path / "work"
    work.mkdir()
    return Stack(
        workdir=work, source=tmp_path, env={"MUSIC_ELT_RDS_DSN": dsn}, landing_kind="local"
    )


SECONDS = re.compile(r"(\d+)\s*(?:s\b|sec)")


def test_waiting_for_the_rds_counts_down_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    """While the RDS is unreachable the run says it is waiting and counts down, a second,
    smaller figure within 25 s; Ctrl-C stops the wait with exit 130 and one line."""
    stack = bare_stack(tmp_path, unreachable_dsn())
    run = stack.start()
    try:
        counts: list[int] = []

        def countdown(line: str) -> bool:
            found = SECONDS.search(line)
            waiting = found and re.search(r"(?i)wait|retry|unreachable|RDS", line)
            if waiting and (not counts or int(found[1]) != counts[-1]):
                counts.append(int(found[1]))
            return len(counts) >= 2

        # one waiting line at most every 10 s (rds.WAIT_REPORT_SECONDS): the second at ~10 s
        run.wait_for(Trigger("a second, smaller countdown figure", countdown), timeout=25)
        assert counts[0] > counts[1], f"not counting down: {counts}"
        run.send(signal.SIGINT)
        code, out, err = run.finish(timeout=30)
        problems = exit_problems(code, 130, out, err)
        assert not problems, "\n".join(problems)
    finally:
        stack.stop_all()


@pytest.mark.parametrize(
    "dsn",
    [
        "host=localhost port=notaport dbname",
        "postgresql://etl:s3cr3t-pw@db.example.com:notaport/music",
        "dbname=music user=etl password=s3cr3t-pw host=localhost port=99999",
    ],
    ids=["keyword-missing-value", "url-bad-port", "port-out-of-range"],
)
def test_a_malformed_rds_dsn_is_one_line_and_exit_2(tmp_path: Path, dsn: str) -> None:
    """A malformed MUSIC_ELT_RDS_DSN gets one line saying what is wrong, exit 2 at once,
    never the password, and no traceback."""
    stack = bare_stack(tmp_path, dsn)
    run = stack.start()
    ended = wait_until(lambda: run.proc.poll() is not None, timeout=6)
    run.kill()
    code, out, err = run.finish(timeout=10)
    problems = [] if ended else ["still running after 6 s (waiting for a DSN that cannot work)"]
    problems += exit_problems(code, 2, out, err)
    if "s3cr3t-pw" in out + err:
        problems.append("the password was printed")
    if "MUSIC_ELT_RDS_DSN" not in err:
        problems.append("the line does not name MUSIC_ELT_RDS_DSN")
    assert not problems, "\n".join(problems)
