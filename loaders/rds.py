"""The RDS source: connect (RDS or the embedded PostgreSQL), extract tables in batches.

Extraction reads a table through a server-side cursor, ``batch_size`` rows at a time, ordered by
its primary key (or by every column when it has none) so that the same table content always
gives the same bytes. Each batch becomes one gzip CSV part in the landing zone, every value
rendered as text by PostgreSQL itself. A manifest beside the parts records the columns, the row
count and a SHA-256 of the uncompressed CSV: the fingerprint that tells the loader whether the
table changed since the snapshot it last loaded.

Seeding a source database and the embedded server are demo tooling (:mod:`loaders.demo`),
which this package never imports: the entry points that run the embedded stack (the CLI, the
DAG's glue) hand :func:`connect` the server with :func:`serve_embedded`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql
from pydantic import BaseModel, ConfigDict
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from loaders.config import ConfigError, Settings, check_identifier, redact
from loaders.errors import ServiceOutage, one_line
from loaders.landing import RDS_PREFIX, LandingStore

Progress = Callable[[str], None]

# Columns the pipeline relies on (the KPI contract): extraction refuses a table without them.
REQUIRED_COLUMNS = {
    "users": ("user_id", "user_name", "user_age", "user_country", "created_at"),
    "songs": (
        "track_id",
        "artists",
        "album_name",
        "track_name",
        "popularity",
        "duration_ms",
        "track_genre",
    ),
}


class TableExtract(BaseModel):
    """One extracted snapshot of a table: its parts in landing and its fingerprint (its JSON
    form is the manifest beside the parts, and what Airflow tasks pass on)."""

    model_config = ConfigDict(frozen=True)

    table: str
    run_id: str
    prefix: str  # rds/<table>/<run>/
    columns: tuple[str, ...]
    row_count: int
    sha256: str
    parts: tuple[str, ...]
    size_bytes: int


def require_source(settings: Settings) -> None:
    """ConfigError, before anything is created, when the source is the embedded RDS and the
    work directory was never seeded (a mistyped ``--workdir`` creates nothing)."""
    if settings.embedded_rds and not settings.pgdata.is_dir():
        raise ConfigError(
            f"{settings.workdir} has no embedded RDS: seed it first (music-elt seed --from-dir "
            f"DIR --workdir {settings.workdir}), or set MUSIC_ELT_RDS_DSN to your RDS database"
        )


EmbeddedServer = Callable[[Path], Any]
"""The embedded RDS stand-in: started (or attached to) in its data directory, with ``get_uri()``
giving its DSN (:func:`loaders.demo.embedded.embedded_server`)."""
_embedded_server: EmbeddedServer | None = None


def serve_embedded(server: EmbeddedServer) -> None:
    """Let :func:`connect` start ``server`` when no ``MUSIC_ELT_RDS_DSN`` is set."""
    global _embedded_server
    _embedded_server = server


WAIT_REPORT_SECONDS = 10.0
"""While the RDS refuses connections, one "waiting ... left" line at most this often."""


@contextmanager
def connect(
    settings: Settings,
    *,
    wait_seconds: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> Iterator[Any]:
    """A psycopg2 connection to the source database.

    With no ``MUSIC_ELT_RDS_DSN`` this starts (or reuses) the embedded PostgreSQL whose data
    lives in the work directory (the server :func:`serve_embedded` was given). A refused
    connection is retried for ``wait_seconds`` (default ``MUSIC_ELT_RDS_WAIT_SECONDS``),
    saying so through ``progress`` at most every :data:`WAIT_REPORT_SECONDS` with the time
    left; then ConnectionError says which database (password redacted), why, and what to check.
    """
    if settings.embedded_rds:
        if _embedded_server is None:
            raise ConfigError(
                "no MUSIC_ELT_RDS_DSN: set it to your RDS database (the embedded stand-in runs "
                "under music-elt and the DAG only)"
            )
        dsn = _embedded_server(settings.pgdata).get_uri()
    else:
        dsn = settings.rds_dsn
    wait = settings.rds_wait_seconds if wait_seconds is None else wait_seconds
    deadline = time.monotonic() + wait
    reported = -WAIT_REPORT_SECONDS

    def say_waiting(state: RetryCallState) -> None:
        nonlocal reported
        now = time.monotonic()
        if progress is None or state.outcome is None or now - reported < WAIT_REPORT_SECONDS:
            return
        reported = now
        error = one_line(state.outcome.exception() or "refused", lines=1)
        left = max(0.0, deadline - now)
        progress(f"  waiting for the RDS database at {redact(dsn)} ({error}): {left:.0f}s left")

    retrying = Retrying(
        retry=retry_if_exception_type(psycopg2.OperationalError),
        stop=stop_after_delay(wait),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        before_sleep=say_waiting,
        reraise=True,
    )
    try:
        conn = retrying(psycopg2.connect, dsn, connect_timeout=10)
    except psycopg2.OperationalError as exc:
        waited = f" (retried for {wait:.0f}s)" if wait else ""
        raise ServiceOutage(
            f"cannot reach the RDS database at {redact(dsn)}{waited}: {one_line(exc, lines=1)}. "
            "Check that it is running and reachable from here (host, port, security group) and "
            "MUSIC_ELT_RDS_DSN; MUSIC_ELT_RDS_WAIT_SECONDS sets how long to retry"
        ) from None
    try:
        yield conn
    finally:
        conn.close()


def extract_table(
    conn: Any,
    table: str,
    landing: LandingStore,
    *,
    run_id: str,
    batch_size: int,
    progress: Progress = print,
) -> TableExtract:
    """Extract ``table`` into gzip CSV parts of ``batch_size`` rows under rds/<table>/<run>/."""
    check_identifier(table, "RDS table")
    columns = _table_columns(conn, table)
    order = _primary_key(conn, table) or columns
    query = sql.SQL("select {} from {} order by {}").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns),
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in order),
    )
    prefix = f"{RDS_PREFIX}{table}/{run_id}/"
    digest = hashlib.sha256()
    parts: list[str] = []
    rows = size = 0
    header = _csv_line(columns)
    digest.update(header)
    with conn.cursor(name=f"extract_{table}") as cur, tempfile.TemporaryDirectory() as tmp:
        cur.itersize = batch_size
        cur.execute(query)
        while batch := cur.fetchmany(batch_size):
            key = f"{prefix}part-{len(parts) + 1:05d}.csv.gz"
            part = Path(tmp, "part.csv.gz")
            with gzip.open(part, "wb", compresslevel=5) as out:
                out.write(header)
                for row in batch:
                    line = _csv_line(row)
                    digest.update(line)
                    out.write(line)
            landing.put(key, part)
            size += part.stat().st_size
            parts.append(key)
            rows += len(batch)
            progress(f"  {table}: {rows:,} rows extracted ({len(parts)} parts)")
    conn.rollback()  # end the read transaction the named cursor opened
    extract = TableExtract(
        table=table,
        run_id=run_id,
        prefix=prefix,
        columns=tuple(columns),
        row_count=rows,
        sha256=digest.hexdigest(),
        parts=tuple(parts),
        size_bytes=size,
    )
    landing.write_text(f"{prefix}_manifest.json", extract.model_dump_json(indent=2))
    return extract


def latest_extract(landing: LandingStore, table: str) -> TableExtract | None:
    """The newest complete extract of ``table`` in landing (its manifest is written last)."""
    manifests = [
        obj.key
        for obj in landing.list(f"{RDS_PREFIX}{table}/")
        if obj.key.endswith("/_manifest.json")
    ]
    if not manifests:
        return None
    with landing.open(max(manifests)) as handle:
        return TableExtract.model_validate_json(handle.read())


def table_exists(conn: Any, table: str) -> bool:
    """Whether ``table`` exists in the connection's current schema."""
    with conn.cursor() as cur:
        cur.execute(
            "select to_regclass(quote_ident(current_schema()) || '.' || quote_ident(%s))", (table,)
        )
        (found,) = cur.fetchone()
    conn.rollback()
    return found is not None


def _table_columns(conn: Any, table: str) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(
            """
            select column_name from information_schema.columns
            where table_schema = current_schema() and table_name = %s
            order by ordinal_position
            """,
            (table,),
        )
        columns = [name for (name,) in cur.fetchall()]
    if not columns:
        raise ConfigError(f"the RDS database has no table {table!r} in its current schema")
    missing = [c for c in REQUIRED_COLUMNS.get(table, ()) if c not in columns]
    if missing:
        raise ConfigError(f"RDS table {table} lacks required column(s) {', '.join(missing)}")
    return columns


def _primary_key(conn: Any, table: str) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(
            """
            select a.attname
            from pg_index i
            join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
            where i.indrelid = to_regclass(quote_ident(current_schema()) || '.' || quote_ident(%s))
              and i.indisprimary
            order by array_position(i.indkey::int2[], a.attnum)
            """,
            (table,),
        )
        return [name for (name,) in cur.fetchall()]


def _csv_line(values: Any) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue().encode()
