"""Every error this package raises on purpose, and what a failure means: retry it or not.

Each error is **terminal** or **transient** (as dlt's DestinationTerminalException and
DestinationTransientException are):

- :class:`TerminalError`: running again cannot help until someone fixes the cause: bad
  configuration (:class:`ConfigError`), a file whose bytes cannot be loaded
  (:class:`FileRejected`), a failed dbt model or test (:class:`DbtFailed`), no green build for the
  steps after it (:class:`BuildNotGreen`). Airflow fails the task at once, without a retry.
- :class:`TransientError`: a service failed or was busy and nothing was left half-done, so the same
  step succeeds later: an outage of S3, IAM, the network or the warehouse, throttling
  (:class:`ServiceOutage`, :class:`PublishFailed`), a run lock held (:class:`RunLocked`), nothing
  published yet (:class:`NoKpiData`). Airflow retries the task, with exponential backoff.

Each carries the ``step`` it failed in (extract, plan, load, dbt build, archive, publish, ...; the
step fills it in when the raiser did not know) and a message of one line (:func:`one_line`) that
says what to do. The CLI maps them to exit codes in one place (``loaders/cli.py``); Ctrl-C and
SIGTERM stop a run as :class:`Interrupted`, neither terminal nor transient.

Bad data or outage: a file is quarantined only when its bytes cannot be loaded
(:func:`is_bad_data`). Anything else is an outage of a service (S3, IAM, network, the warehouse):
the run fails, names it (:func:`describe_outage`) and touches nothing, so the next run retries the
same files. Unknown errors are outages: a wrong "outage" costs a retry, a wrong "bad data" loses
plays.

Redshift reports both kinds as ``InternalError`` (XX000), so its messages decide. AWS documents
the texts matched here:

- a row or format error: "Load into table '...' failed. Check 'stl_load_errors' system table for
  details." on a provisioned cluster (Redshift Database Developer Guide, "System tables for
  troubleshooting data loads" and "STL_LOAD_ERRORS"; the load-error reference lists the causes,
  e.g. "Delimiter not found", "Extra column(s) found", "Missing data for not-null field"), and
  "... Check 'sys_load_error_detail' system table for details." on Redshift Serverless, which
  has no STL tables and records COPY errors in SYS_LOAD_ERROR_DETAIL ("SYS_LOAD_ERROR_DETAIL":
  "details of COPY command errors"; "Amazon Redshift Serverless": the SYS monitoring views
  replace the STL tables there); a corrupt gzip object surfaces as
  "Failed to inflate ... zlib error code" / "invalid or incomplete deflate data".
- outages: "S3ServiceException:Access Denied,Status 403" (no GET/LIST permission on the bucket,
  "Permissions to access other AWS resources"); "not authorized to assume IAM Role" / "Not
  authorized to get credentials of role" (the COPY role's trust policy); "The bucket you are
  attempting to access must be addressed using the specified endpoint" (bucket in another
  region: "Load fails", use COPY ... REGION); "Please reduce your request rate" / "SlowDown" /
  "Status 503" (S3 throttling); "The specified key does not exist" / "does not exist" (an
  object or manifest entry that vanished); timeouts and connection resets.
"""

from __future__ import annotations

import gzip
import re
import zlib
from typing import TYPE_CHECKING, ClassVar

from loaders.landing import shown

if TYPE_CHECKING:
    from loaders.dbt import DbtReport


class PipelineError(Exception):
    """An error this package raises on purpose: its message is one line that says what to do.
    ``transient`` says whether the same step can succeed when run again later; ``step`` names the
    step it failed in, given by the raiser or filled in by the step (:func:`step_outage`)."""

    transient: ClassVar[bool]
    step: str = ""

    def __init__(self, message: str, *, step: str = "") -> None:
        super().__init__(message)
        if step:
            self.step = step


class TerminalError(PipelineError):
    """Running again cannot help until someone fixes the cause: never retried."""

    transient = False


class TransientError(PipelineError):
    """A service failed or was busy and nothing was left half-done: retried."""

    transient = True


class ConfigError(TerminalError, ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


class FileRejected(TerminalError):
    """The object cannot be loaded at all; ``reason`` says why in one line (the file is
    quarantined, the run goes on)."""

    step = "load"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DbtFailed(TerminalError, RuntimeError):
    """dbt ran and something failed (a model error or a failing test)."""

    step = "dbt build"

    def __init__(self, message: str, report: DbtReport | None = None) -> None:
        super().__init__(message)
        self.report = report

    @property
    def hint(self) -> str:
        """What to do next: a failing test means bad data; anything else is not the data's."""
        if "Out of Memory Error" in str(self):
            return (
                "DuckDB ran out of memory: raise MUSIC_ELT_DUCKDB_MEMORY_LIMIT (or lower "
                "MUSIC_ELT_DUCKDB_THREADS) and run again"
            )
        failures = self.report.failures if self.report else ()
        if failures and all(line.startswith("test ") for line in failures):
            return "fix the data and run again"
        return "see the dbt log, fix the cause and run again"


class BuildNotGreen(TerminalError, RuntimeError):
    """A step that follows the dbt build found no green build of this run."""


class ServiceOutage(TransientError, ConnectionError):
    """A service failed (S3, IAM, the network, the warehouse): nothing was quarantined or
    recorded; rerun later."""


class PublishFailed(ServiceOutage):
    """Publishing failed (a full disk, the warehouse): the build stays recorded, readers keep
    the previous publish, and the next run publishes again."""

    step = "publish"


class RunLocked(TransientError, ConnectionError):
    """Another run holds the run lock of this work directory or warehouse."""


class NoKpiData(TransientError, RuntimeError):
    """Nothing to read yet: no green build published."""


def one_line(
    error: BaseException | str, limit: int = 300, *, lines: int = 2, with_type: bool = False
) -> str:
    """An error (or a message) as one printable line: its first ``lines`` non-blank lines, each
    run of whitespace one space, at most ``limit`` characters, escaped when a character is not
    printable; the error's type name when it has no text (``with_type``: always before it)."""
    kept = [line for line in str(error).splitlines() if line.strip()][:lines]
    text = " ".join(" ".join(kept).split())[:limit]
    if not text.isprintable():
        text = repr(text)
    if isinstance(error, str):
        return text
    kind = type(error).__name__
    return f"{kind}: {text}" if with_type and text else text or kind


_REDSHIFT_DATA_ERROR = re.compile(
    r"stl_load_errors|sys_load_error_detail|failed to inflate|incomplete deflate data|zlib error|"
    r"invalid gzip|gzip: (?:stdin: )?(?:not in gzip format|unexpected end)",
    re.IGNORECASE,
)

# DuckDB reading a truncated or corrupt .gz: "Unexpected end of GZIP stream", "Failed to decode
# gzip stream: data error", "Input is not a GZIP stream".
_DUCKDB_DECOMPRESSION_ERROR = re.compile(
    r"gzip stream|not a gzip|gzip file|zlib|inflate|decompress", re.IGNORECASE
)

_OUTAGES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, re.compile(pattern, re.IGNORECASE))
    for label, pattern in (
        (
            "IAM: the COPY role cannot be assumed",
            r"not authorized to (?:assume|get credentials)|assumerole|iam role",
        ),
        (
            "S3 region: the bucket is in another region (set MUSIC_ELT_REDSHIFT_REGION)",
            r"must be addressed using the specified endpoint|permanentredirect|"
            r"status 301|wrong region|authorizationheadermalformed",
        ),
        ("S3 access denied", r"access ?denied|status 403|forbidden|invalidaccesskeyid"),
        (
            "S3 throttling",
            r"slow ?down|reduce your request rate|status 503|throttl|service unavailable",
        ),
        (
            "S3 object missing",
            r"nosuchkey|specified key does not exist|no such (?:key|file)|"
            r"s3 prefix .* does not exist",
        ),
        (
            "network",
            r"timed? ?out|connection (?:reset|refused|closed)|could not connect|"
            r"server closed the connection|network|name or service not known|"
            r"could not connect to the endpoint|endpointconnectionerror",
        ),
    )
)


def is_bad_data(exc: BaseException) -> bool:
    """Whether ``exc``, raised while loading one file, means the file's own bytes cannot be
    loaded (quarantine it) rather than an outage (fail the run, touch nothing)."""
    import duckdb
    import psycopg2

    if isinstance(exc, duckdb.InvalidInputException | duckdb.ConversionException):
        return True  # DuckDB's CSV reader: wrong column count, unterminated quote, bad UTF-8
    if isinstance(exc, duckdb.IOException):  # also a full disk: only decompression is the file's
        return bool(_DUCKDB_DECOMPRESSION_ERROR.search(str(exc)))
    if isinstance(exc, psycopg2.DataError):
        return True  # PostgreSQL's COPY: bad CSV, wrong column count, invalid encoding
    if isinstance(exc, psycopg2.InternalError):
        return bool(_REDSHIFT_DATA_ERROR.search(str(exc)))
    return isinstance(exc, EOFError | zlib.error | gzip.BadGzipFile)


def outage(exc: BaseException, key: str) -> ServiceOutage:
    """The run-failing error for ``exc`` raised while loading ``key``, naming the outage."""
    return ServiceOutage(
        f"{describe_outage(exc)} while loading {shown(key)}: {one_line(exc)} "
        "(nothing was quarantined; the next run retries it)",
        step="load",
    )


def is_service_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a driver's, the network's or the operating system's error (a
    database, S3 or file system failed or went away), as opposed to a bug in this code."""
    import duckdb
    import psycopg2
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(
        exc, OSError | psycopg2.Error | duckdb.Error | BotoCoreError | ClientError | EOFError
    )


def step_outage(exc: BaseException, step: str, state: str) -> Exception | None:
    """The one-line, run-failing error for ``exc`` raised during the run's ``step`` (extract,
    plan, load, dbt build, archive, publish): this package's own error (:class:`PipelineError`,
    or a plain ConnectionError naming its service) as it is, with its step filled in; a service
    error (:func:`is_service_error`) as a :class:`ServiceOutage`; else None (a bug, whose
    traceback helps). ``state`` says what the step left and what the next run does.
    Files with bad bytes never get here: loading decides those first (:func:`is_bad_data`)."""
    if isinstance(exc, PipelineError):
        exc.step = exc.step or step
        return exc
    if type(exc) is ConnectionError:
        return exc
    if not is_service_error(exc):
        return None
    return ServiceOutage(
        f"{describe_outage(exc)} during {step}: {one_line(exc, with_type=True)} ({state})",
        step=step,
    )


def describe_outage(exc: BaseException) -> str:
    """A short name for the service failure behind ``exc``, for the run's one-line error."""
    text = f"{type(exc).__name__}: {exc}"
    for label, pattern in _OUTAGES:
        if pattern.search(text):
            return label
    return "warehouse or storage error"


_signals_received: list[str] = []


def note_signal(name: str) -> None:
    """Remember a stopping signal (the CLI's SIGTERM handler calls this before raising)."""
    _signals_received.append(name)


def interrupt_signal() -> str:
    """The signal that stopped the run: ``SIGTERM`` when one was noted, else ``Ctrl-C``."""
    return "SIGTERM" if "SIGTERM" in _signals_received else "Ctrl-C"


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is a database driver's report of Ctrl-C or SIGTERM reaching a running
    query (DuckDB: "Query interrupted"; PostgreSQL: "canceling statement due to user request"),
    which must stop the run as an interrupt, never pass for an outage or bad data."""
    import duckdb
    from psycopg2.extensions import QueryCanceledError

    if isinstance(exc, KeyboardInterrupt | duckdb.InterruptException):
        return True
    # Ctrl-C during a DuckDB query run from Python surfaces as a plain RuntimeError
    if isinstance(exc, RuntimeError | duckdb.Error) and str(exc) == "Query interrupted":
        return True
    return isinstance(exc, QueryCanceledError) and "user request" in str(exc)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by the CLI's handler. A KeyboardInterrupt, so that
    dbt cancels its queries and stops its threads as on Ctrl-C before the process exits."""


class Interrupted(BaseException):
    """A run stopped by Ctrl-C or SIGTERM; says in which step and what state it left."""

    def __init__(self, signal_name: str, step: str, state: str) -> None:
        super().__init__(f"interrupted by {signal_name} during {step}: {state}")
        self.signal_name, self.step, self.state = signal_name, step, state
