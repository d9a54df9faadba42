"""loaders/errors.py: terminal or transient, the step, the one line, the CLI's exit codes; and
bad data or outage, on the error texts the warehouses really return.

Redshift's texts are those AWS documents for COPY: the load-error message that points to
STL_LOAD_ERRORS ("System tables for troubleshooting data loads"), S3 and IAM failures
("Permissions to access other AWS resources", "Load fails": the region message), throttling
(S3's SlowDown, status 503) and a missing object or prefix. A row or format error rejects a file;
everything else is an outage and must never quarantine anything."""

from __future__ import annotations

import gzip
import os
import signal
import threading
import zlib
from pathlib import Path

import duckdb
import psycopg2
import psycopg2.errors
import pytest

from loaders.errors import (
    BuildNotGreen,
    ConfigError,
    DbtFailed,
    FileRejected,
    Interrupted,
    NoKpiData,
    PipelineError,
    PublishFailed,
    RunLocked,
    ServiceOutage,
    TerminalError,
    Terminated,
    TransientError,
    describe_outage,
    is_bad_data,
    one_line,
    outage,
    step_outage,
)

REDSHIFT_LOAD_ERROR = (
    "Load into table '_landing' failed.  Check 'stl_load_errors' system table for details."
)
# Redshift Serverless has no STL tables: its COPY names the SYS view instead
SERVERLESS_LOAD_ERROR = (
    "Load into table 'x' failed. Check 'sys_load_error_detail' system table for details."
)
REDSHIFT_GZIP_ERROR = (
    "Failed writing body (0 != 16384) Cause: Failed to inflateinvalid or incomplete deflate "
    "data. zlib error code: -3"
)
REDSHIFT_OUTAGES = {
    "S3 access denied": (
        "S3ServiceException:Access Denied,Status 403,Error AccessDenied,Rid 8C2D0F1A,"
        "ExtRid Xf0n,CanRetry 1\nDETAIL:\n  error:  S3ServiceException:Access Denied,Status "
        "403,Error AccessDenied\n  code:      8001\n  context:   Listing bucket=music "
        "prefix=land/streams/a.csv\n  location:  s3_utility.cpp:625"
    ),
    "IAM: the COPY role cannot be assumed": (
        "User arn:aws:redshift:eu-west-1:123456789012:dbuser:analytics/loader is not authorized "
        "to assume IAM Role arn:aws:iam::123456789012:role/redshift-copy"
    ),
    "S3 region: the bucket is in another region (set MUSIC_ELT_REDSHIFT_REGION)": (
        "S3ServiceException:The bucket you are attempting to access must be addressed using the "
        "specified endpoint. Please send all future requests to this endpoint.,Status 301,"
        "Error PermanentRedirect"
    ),
    "S3 throttling": (
        "S3ServiceException:Please reduce your request rate.,Status 503,Error SlowDown"
    ),
    "S3 object missing": "The specified S3 prefix 'land/streams/a.csv' does not exist",
}


def test_redshift_row_and_format_errors_are_bad_data() -> None:
    assert is_bad_data(psycopg2.InternalError(REDSHIFT_LOAD_ERROR))
    assert is_bad_data(psycopg2.InternalError(REDSHIFT_GZIP_ERROR))


def test_redshift_serverless_row_and_format_errors_are_bad_data() -> None:
    """On Serverless the same load error points to sys_load_error_detail: a bad file is
    quarantined there too, not retried as an outage on every run."""
    exc = psycopg2.InternalError(SERVERLESS_LOAD_ERROR)
    assert is_bad_data(exc)
    assert not is_bad_data(psycopg2.InternalError("relation sys_load_detail does not exist x"))


@pytest.mark.parametrize(("label", "text"), REDSHIFT_OUTAGES.items())
def test_redshift_service_failures_are_outages_and_named(label: str, text: str) -> None:
    exc = psycopg2.InternalError(text)
    assert not is_bad_data(exc)
    assert describe_outage(exc) == label
    error = outage(exc, "streams/a.csv")
    assert isinstance(error, ServiceOutage) and isinstance(error, ConnectionError)
    assert str(error).startswith(f"{label} while loading streams/a.csv: ")
    assert "nothing was quarantined" in str(error)
    assert "\n" not in str(error)


def test_unknown_internal_errors_are_outages() -> None:
    # a wrong "outage" costs a retry; a wrong "bad data" would lose plays
    exc = psycopg2.InternalError("could not complete because of conflict with concurrent txn")
    assert not is_bad_data(exc)
    assert describe_outage(exc) == "warehouse or storage error"


def test_postgresql_copy_errors_are_bad_data() -> None:
    for error in (
        psycopg2.errors.BadCopyFileFormat("extra data after last expected column"),
        psycopg2.errors.InvalidTextRepresentation("invalid input syntax"),
        psycopg2.errors.CharacterNotInRepertoire('invalid byte sequence for encoding "UTF8"'),
    ):
        assert is_bad_data(error), error
    lost = psycopg2.OperationalError("server closed the connection unexpectedly")
    assert not is_bad_data(lost)
    assert describe_outage(lost) == "network"


def test_duckdb_and_decompression_errors_are_bad_data() -> None:
    with duckdb.connect() as conn, pytest.raises(duckdb.Error) as raised:
        conn.execute("select cast('x' as integer)")
    assert is_bad_data(raised.value)
    assert is_bad_data(duckdb.InvalidInputException("CSV Error on Line: 3"))
    with pytest.raises(gzip.BadGzipFile) as bad_gzip:
        gzip.decompress(b"\x1f\x8bnot gzip at all")
    assert is_bad_data(bad_gzip.value)
    assert is_bad_data(EOFError("Compressed file ended before the end-of-stream marker"))
    assert is_bad_data(zlib.error("invalid stored block lengths"))
    assert not is_bad_data(PermissionError("[Errno 13] Permission denied: 'landing'"))


def test_a_truncated_or_corrupt_gzip_read_by_duckdb_is_bad_data(tmp_path: Path) -> None:
    data = b"user_id,track_id,listen_time\n" + b"".join(
        b"%d,t%d,2026-01-05 10:00:00\n" % (i, i) for i in range(20_000)
    )
    packed = gzip.compress(data)
    truncated, corrupt = tmp_path / "truncated.csv.gz", tmp_path / "corrupt.csv.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    corrupt.write_bytes(packed[:10] + b"garbage" * 100)
    for path in (truncated, corrupt):
        with duckdb.connect() as conn, pytest.raises(duckdb.IOException) as raised:
            conn.execute(
                "select count(*) from read_csv(?, header = true, auto_detect = false, "
                "columns = {'a': 'VARCHAR', 'b': 'VARCHAR', 'c': 'VARCHAR'})",
                [str(path)],
            )
        assert is_bad_data(raised.value), raised.value
    # an I/O error that is not about the file's bytes stays an outage
    assert not is_bad_data(duckdb.IOException("IO Error: No space left on device"))


def test_a_driver_reporting_an_interrupted_query_is_an_interrupt_not_an_outage() -> None:
    from psycopg2.extensions import QueryCanceledError

    from loaders.errors import is_interrupt

    assert is_interrupt(duckdb.InterruptException("INTERRUPT Error: Interrupted!"))
    assert is_interrupt(QueryCanceledError("canceling statement due to user request"))
    assert not is_interrupt(QueryCanceledError("canceling statement due to statement timeout"))
    assert not is_interrupt(duckdb.IOException("IO Error: No space left on device"))


def test_ctrl_c_during_a_duckdb_query_is_an_interrupt() -> None:
    """What duckdb raises when Ctrl-C reaches a query it runs (a plain RuntimeError). SIGINT is
    sent once DuckDB reports the query's progress, i.e. while it runs; alone, the query would
    take minutes, so it cannot end before the signal reaches it."""
    from loaders.errors import is_interrupt

    conn = duckdb.connect(config={"threads": 1})
    conn.execute("set enable_progress_bar = true; set enable_progress_bar_print = false")
    finished = threading.Event()

    def interrupt_once_running() -> None:
        while conn.query_progress() < 0:  # -1 until the query executes
            if finished.wait(0.005):
                return
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    try:
        with pytest.raises(BaseException) as caught:
            conn.execute("select count(*) from range(100000000000) t(x) where x % 7 = 3").fetchall()
    finally:
        finished.set()
    assert is_interrupt(caught.value), repr(caught.value)
    assert not is_interrupt(RuntimeError("something else"))


def test_a_failed_dbt_build_says_what_to_do_next() -> None:
    """A failing test is the data's; an out-of-memory error or a model error is not."""
    from collections import Counter

    from loaders.dbt import DbtReport

    def failed(message: str, *failures: str) -> DbtFailed:
        report = DbtReport("build", False, {"model": Counter()}, failures=failures)
        return DbtFailed(message, report)

    assert failed("dbt build failed", "test not_null_x: Got 3 results").hint == (
        "fix the data and run again"
    )
    oom = failed(
        "model fct_listens: Out of Memory Error: failed to allocate data of size 128.0 MiB",
        "model fct_listens: Runtime Error in model fct_listens",
    )
    assert "MUSIC_ELT_DUCKDB_MEMORY_LIMIT" in oom.hint
    model_error = failed("dbt build failed", "model fct_x: Runtime Error", "test t: Got 1 result")
    assert model_error.hint == "see the dbt log, fix the cause and run again"


@pytest.mark.parametrize(
    ("error", "transient", "builtin"),
    [
        (ConfigError("MUSIC_ELT_BATCH_SIZE='x' is not a number"), False, ValueError),
        (FileRejected("header lacks required column(s) user_id"), False, Exception),
        (DbtFailed("dbt build failed: test not_null_x: Got 3 results"), False, RuntimeError),
        (BuildNotGreen("no green dbt build of run r is recorded"), False, RuntimeError),
        (ServiceOutage("S3 throttling while loading streams/a.csv"), True, ConnectionError),
        (PublishFailed("publishing the marts failed: disk full"), True, ConnectionError),
        (RunLocked("another run holds the run lock"), True, ConnectionError),
        (NoKpiData("no serving copy yet"), True, RuntimeError),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_each_error_is_terminal_or_transient(
    error: PipelineError, transient: bool, builtin: type[Exception]
) -> None:
    """Terminal: fix the cause, retrying cannot help. Transient: the same step succeeds later.
    Each keeps the built-in base its callers catch (a ConnectionError is still one)."""
    assert error.transient is transient
    assert isinstance(error, TransientError if transient else TerminalError)
    assert not isinstance(error, TerminalError if transient else TransientError)
    assert isinstance(error, builtin)


def test_the_error_types_keep_their_old_import_paths() -> None:
    from loaders import config, dbt, pipeline, serving
    from loaders.warehouse import csv_files

    assert config.ConfigError is ConfigError and dbt.DbtFailed is DbtFailed
    assert pipeline.BuildNotGreen is BuildNotGreen and csv_files.FileRejected is FileRejected
    assert serving.NoKpiData is NoKpiData and serving.PublishFailed is PublishFailed


def test_an_error_carries_the_step_it_failed_in() -> None:
    state = "nothing was loaded; the next run starts over"
    locked = RunLocked("another run holds the run lock")
    assert locked.step == ""
    assert step_outage(locked, "plan", state) is locked and locked.step == "plan"
    built = DbtFailed("dbt build failed")  # the raiser's step stays
    assert step_outage(built, "publish", state) is built and built.step == "dbt build"
    assert outage(OSError("No space left on device"), "streams/a.csv").step == "load"
    lost = step_outage(psycopg2.OperationalError("timeout expired"), "extract", state)
    assert isinstance(lost, ServiceOutage) and lost.step == "extract" and lost.transient
    assert str(lost) == f"network during extract: OperationalError: timeout expired ({state})"


def test_one_line_of_an_error() -> None:
    refused = psycopg2.OperationalError(
        'connection to server at "db", port 5432 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?\n\nthird"
    )
    assert one_line(refused) == (
        'connection to server at "db", port 5432 failed: Connection refused '
        "Is the server running on that host and accepting TCP/IP connections?"
    )
    assert one_line(refused, lines=1) == (
        'connection to server at "db", port 5432 failed: Connection refused'
    )
    assert one_line(ValueError("boom"), with_type=True) == "ValueError: boom"
    assert one_line(ValueError("")) == one_line(ValueError(" \n"), with_type=True) == "ValueError"
    assert one_line("x" * 400) == "x" * 300 and one_line("x" * 400, 500) == "x" * 400
    assert one_line("red \x1b[31m text") == repr("red \x1b[31m text")  # no terminal escapes


@pytest.mark.parametrize(
    ("error", "code", "lines"),
    [
        (ConfigError("MUSIC_ELT_X is bad"), 2, ["error: MUSIC_ELT_X is bad"]),
        (RunLocked("another run holds it"), 2, ["error: another run holds it"]),
        (ConnectionError("cannot reach x"), 2, ["error: cannot reach x"]),
        (FileNotFoundError("no users.csv"), 2, ["error: no users.csv"]),
        (
            DbtFailed("dbt build failed: model m: Runtime Error"),
            1,
            [
                "dbt build failed: model m: Runtime Error",
                "nothing was archived or published; see the dbt log, fix the cause and run again",
            ],
        ),
        (Interrupted("Ctrl-C", "load", "state"), 130, ["interrupted by Ctrl-C during load: state"]),
        (Interrupted("SIGTERM", "plan", "s"), 143, ["interrupted by SIGTERM during plan: s"]),
        (KeyboardInterrupt(), 130, ["interrupted by Ctrl-C"]),
        (Terminated(), 143, ["interrupted by SIGTERM"]),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_the_cli_maps_each_error_to_its_exit_code(
    error: BaseException, code: int, lines: list[str]
) -> None:
    from loaders import cli

    assert isinstance(error, cli.EXPECTED_ERRORS)
    assert cli.failure(error) == (code, lines)


def test_the_cli_exits_2_with_one_line_on_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from loaders import cli

    monkeypatch.setenv("MUSIC_ELT_RDS_WAIT_SECONDS", "soon")
    assert cli.main(["run", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("music-elt: error: MUSIC_ELT_RDS_WAIT_SECONDS='soon'")
    assert err.count("\n") == 1 and "Traceback" not in err
