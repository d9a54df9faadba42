"""Bad data or outage (loaders/errors.py), on the error texts the warehouses really return.

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

from loaders.errors import ServiceOutage, describe_outage, is_bad_data, outage

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
    """What duckdb raises when Ctrl-C reaches a query it runs (a plain RuntimeError)."""
    from loaders.errors import is_interrupt

    conn = duckdb.connect()
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(BaseException) as caught:
        conn.execute("select count(*) from range(3000000000) t(x) where x % 7 = 3").fetchall()
    assert is_interrupt(caught.value), repr(caught.value)
    assert not is_interrupt(RuntimeError("something else"))


def test_a_failed_dbt_build_says_what_to_do_next() -> None:
    """A failing test is the data's; an out-of-memory error or a model error is not."""
    from collections import Counter

    from loaders.dbt import DbtFailed, DbtReport

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
