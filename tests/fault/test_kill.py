"""kill -9 of a real `music-elt run` at each stage boundary, on the local and the S3 landing
zone, then a plain rerun: nothing lost, nothing doubled.

After the rerun (:meth:`Stack.assert_recovered`): the marts equal tests/kpi_reference.py, each
file is archived or quarantined exactly once, the ledger holds each file version once, raw row
counts equal file row counts, the RDS snapshots are whole.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.checks import ARCHIVE, STREAMS, Version, landing_objects, query, raw_rows_by_file
from tests.fault.harness import Stack, Trigger, dbt_halfway, extracting, file_loaded

pytestmark = [pytest.mark.fault, pytest.mark.slow]

MOMENTS: dict[str, Trigger] = {
    "during RDS extract": extracting,  # after the first batch of users is written
    "between file loads": file_loaded(3),  # after the 3rd stream file's load line
    "mid-dbt": dbt_halfway,  # dbt reports half of its nodes done
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_kill_9_then_a_plain_rerun_recovers(stack: Stack, moment: str) -> None:
    """kill -9 during RDS extract, between two file loads, or halfway through dbt build (the
    state is checked to be that), then a plain rerun: no row lost or doubled, each file
    archived once, marts equal to the reference."""
    stack.deliver_generated()
    if moment == "between file loads":  # a group of files commits once: groups of two files
        stack.env["MUSIC_ELT_FILES_PER_LOAD_TASK"] = "2"
    stack.start().killed_at(MOMENTS[moment])
    if moment == "during RDS extract":
        assert not loaded_keys(stack), "the kill did not fall before loading"
    elif moment == "between file loads":
        assert_loads_atomic(stack)
    else:
        assert not query(stack.settings, "select * from raw_meta.dbt_builds"), (
            "the kill did not fall before dbt build finished"
        )
        assert not landing_objects(stack.settings, ARCHIVE)
    stack.rerun()
    stack.assert_recovered()


def test_kill_9_during_publish_is_repaired_by_a_plain_run(stack: Stack) -> None:
    """kill -9 during publish, after the build was recorded and the files archived: the next
    plain run publishes the recorded build (with nothing new to load), leaves no build
    unpublished and no temporary serving file behind, and the stack is whole."""
    stack.deliver_generated()
    stack.start().killed_at(Trigger("the publish step", lambda line: "==> publish" in line))
    out = stack.rerun()
    settings = stack.settings
    (unpublished,) = query(
        settings, "select count(*) from raw_meta.dbt_builds where published_at is null"
    )[0]
    assert unpublished == 0, out
    leftovers = [p.name for p in stack.workdir.iterdir() if p.name.startswith(".serving")]
    assert leftovers == []
    stack.assert_recovered()


def loaded_keys(stack: Stack) -> list[str]:
    if not stack.settings.warehouse.duckdb_path.exists():
        return []
    return [key for (key,) in query(stack.settings, "select object_key from raw_meta.load_ledger")]


def assert_loads_atomic(stack: Stack) -> None:
    """After a kill between file loads each file is loaded whole with its ledger row, or not
    at all (a load group's COPYs and ledger rows commit together), and nothing was archived
    before dbt ran."""
    settings = stack.settings
    ledger = {
        key: int(rows)
        for key, rows in query(
            settings,
            "select object_key, row_count from raw_meta.load_ledger where object_key like %s",
            ("streams/%",),
        )
    }
    rows = {v.key: v.rows for v in stack.deliveries}
    assert 0 < len(ledger) < len(rows), f"the kill did not fall between loads: {ledger}"
    assert ledger == {key: rows[key] for key in ledger}, ledger
    assert dict(raw_rows_by_file(settings)) == {k: n for k, n in ledger.items() if n}
    assert not landing_objects(settings, ARCHIVE), "files archived before dbt build"
    assert len(landing_objects(settings, STREAMS)) == len(stack.deliveries)


def test_rerun_finishes_a_move_interrupted_between_archive_copy_and_delete(stack: Stack) -> None:
    """The archive step moves files one by one (S3: copy, then delete). There is no output
    line between the two, so the state is built: after a green run, one file is back in the
    input prefix while its archive copy stays (killed after the copy), the next is back and
    not archived (not reached). The rerun must finish both moves: each file archived exactly
    once, none left in streams/, nothing loaded twice, marts unchanged."""
    files = stack.deliver_generated()
    stack.rerun()
    settings = stack.settings
    archived = landing_objects(settings, ARCHIVE)
    copied, untouched = files[2], files[5]
    for version in (copied, untouched):
        assert [key for key, data in archived.items() if data == version.data], version.key
    landing = stack_landing(stack)
    restore(stack, copied)  # the copy is in the archive and the source still in streams/
    untouched_archived = next(k for k, d in archived.items() if d == untouched.data)
    landing.move(untouched_archived, untouched.key)  # not copied yet
    assert set(landing_objects(settings, STREAMS)) == {copied.key, untouched.key}

    stack.rerun()
    stack.assert_recovered()


def stack_landing(stack: Stack):  # type: ignore[no-untyped-def]
    from loaders import pipeline

    return pipeline.landing_store(stack.settings)


def restore(stack: Stack, version: Version) -> None:
    """Put ``version``'s bytes back at its key (not a new delivery: the same version)."""
    staged = stack.workdir.parent / "restored"
    staged.write_bytes(version.data)
    stack_landing(stack).put(version.key, staged)


def test_the_embedded_rds_never_outlives_a_run_killed_with_kill_9(tmp_path: Path) -> None:
    """kill -9 of `music-elt run` while it uses the embedded PostgreSQL (pgserver): the server
    stops soon after (its watchdog sees the run gone), and the next run starts it again, runs
    to the end and leaves no server behind."""
    import psutil

    src, work = tmp_path / "src", tmp_path / "work"
    src.mkdir()
    (src / "users.csv").write_text(
        "user_id,user_name,user_age,user_country,created_at\n1,A,3,DE,x\n"
    )
    (src / "songs.csv").write_text(
        "track_id,artists,album_name,track_name,popularity,duration_ms,track_genre\n"
        "t1,Zed,A,One,50,200000,pop\n"
    )
    (src / "streams").mkdir()
    (src / "streams" / "a.csv").write_text(
        "user_id,track_id,listen_time\n1,t1,2024-01-01 10:00:00\n"
    )
    cli = [sys.executable, "-m", "loaders.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSIC_ELT_", "WAREHOUSE_"))}
    at = ["--workdir", str(work)]
    subprocess.run(
        [*cli, "seed", "--from-dir", str(src), *at], env=env, check=True, capture_output=True
    )
    pgdata = work / "rds-pgdata"

    def server() -> psutil.Process | None:
        for proc in psutil.process_iter(["name", "cmdline"]):
            if proc.info["name"] == "postgres" and str(pgdata) in (proc.info["cmdline"] or []):
                return proc
        return None

    def gone_within(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if server() is None:
                return True
            time.sleep(0.2)
        return False

    assert gone_within(10), "the server of `music-elt seed` outlived it"
    run = subprocess.Popen(
        [*cli, "run", *at], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while server() is None and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.1)
    assert server() is not None, "the run never started the embedded server"
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert gone_within(30), "the embedded server outlived the run killed with kill -9"

    rerun = subprocess.run([*cli, "run", *at], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert gone_within(15), "the embedded server outlived the rerun"
