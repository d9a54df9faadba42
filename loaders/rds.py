"""The RDS source: connect (RDS or the embedded PostgreSQL), seed it, extract tables in batches.

Extraction reads a table through a server-side cursor, ``batch_size`` rows at a time, ordered by
its primary key (or by every column when it has none) so that the same table content always
gives the same bytes. Each batch becomes one gzip CSV part in the landing zone, every value
rendered as text by PostgreSQL itself. A manifest beside the parts records the columns, the row
count and a SHA-256 of the uncompressed CSV: the fingerprint that tells the loader whether the
table changed since the snapshot it last loaded.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from loaders.config import ConfigError, Settings, check_identifier, redact
from loaders.landing import RDS_PREFIX, LandingStore

Progress = Callable[[str], None]

# Columns the pipeline relies on (the KPI contract); seeding types them, everything else stays text.
_TYPED_COLUMNS = {
    "user_id": "bigint",
    "user_age": "integer",
    "popularity": "integer",
    "duration_ms": "bigint",
}
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


@dataclass(frozen=True)
class TableExtract:
    """One extracted snapshot of a table: its parts in landing and its fingerprint."""

    table: str
    run_id: str
    prefix: str  # rds/<table>/<run>/
    columns: tuple[str, ...]
    row_count: int
    sha256: str
    parts: tuple[str, ...]
    size_bytes: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TableExtract:
        data = json.loads(text)
        data["columns"] = tuple(data["columns"])
        data["parts"] = tuple(data["parts"])
        return cls(**data)


@contextmanager
def connect(settings: Settings, *, wait_seconds: float = 0.0) -> Iterator[Any]:
    """A psycopg2 connection to the source database.

    With no ``MUSIC_ELT_RDS_DSN`` this starts (or reuses) the embedded PostgreSQL whose data
    lives in the work directory. ``wait_seconds`` retries a refused connection that long.
    """
    if settings.embedded_rds:
        server = embedded_server(settings.pgdata)
        dsn = server.get_uri()
    else:
        dsn = settings.rds_dsn
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            conn = psycopg2.connect(dsn, connect_timeout=10)
            break
        except psycopg2.OperationalError as exc:
            if time.monotonic() >= deadline:
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc
                raise ConnectionError(
                    f"cannot reach the RDS database at {redact(dsn)}: {first_line}"
                ) from None
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
    try:
        yield conn
    finally:
        conn.close()


def embedded_server(pgdata: Path) -> Any:
    """Start (or attach to) the pgserver PostgreSQL in ``pgdata``; it stops with the process."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
        import pgserver

        pgdata.mkdir(parents=True, exist_ok=True)
        return pgserver.get_server(pgdata, cleanup_mode="stop")


def seed_table(conn: Any, table: str, csv_path: Path) -> int:
    """Replace ``table`` in the source database with the rows of ``csv_path``; return the count.

    Column names come from the file's header (a nameless first column, as pandas writes an
    index, becomes ``id``); they must be plain identifiers. The columns the KPI contract relies
    on get their numeric types, the rest are text.
    """
    check_identifier(table, "table")
    with _open_text(csv_path) as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise ConfigError(f"{csv_path} is empty: expected a CSV header")
    columns = source_column_names(header)
    missing = [c for c in REQUIRED_COLUMNS.get(table, ()) if c not in columns]
    if missing:
        raise ConfigError(f"{csv_path} lacks required column(s) {', '.join(missing)}")
    column_defs = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_TYPED_COLUMNS.get(c, "text")))
        for c in columns
    )
    with conn.cursor() as cur:
        cur.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(table)))
        cur.execute(sql.SQL("create table {} ({})").format(sql.Identifier(table), column_defs))
        with _open_binary(csv_path) as raw:
            cur.copy_expert(
                sql.SQL("copy {} from stdin with (format csv, header true)")
                .format(sql.Identifier(table))
                .as_string(conn),
                raw,
            )
        cur.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(table)))
        (count,) = cur.fetchone()
    conn.commit()
    return int(count)


def source_column_names(header: list[str]) -> list[str]:
    """Column names for a CSV header: lower-case, anything but ``[a-z0-9_]`` becomes ``_``.

    A nameless first column (an index, as pandas writes it, or ``Unnamed: 0``) becomes ``id``;
    other nameless columns ``column_<n>``; repeated names get ``_2``, ``_3`` ...
    """
    names: list[str] = []
    for i, raw in enumerate(header):
        name = re.sub(r"[^a-z0-9_]+", "_", raw.strip().lower()).strip("_")
        if i == 0 and (not name or re.fullmatch(r"unnamed_0", name)):
            name = "id"
        name = name or f"column_{i + 1}"
        if name[0].isdigit():
            name = f"c_{name}"
        base, n = name[:60], 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.append(check_identifier(name, "column"))
    return names


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
    landing.write_text(f"{prefix}_manifest.json", extract.to_json())
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
        return TableExtract.from_json(handle.read().decode())


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


@contextmanager
def _open_binary(path: Path) -> Iterator[Any]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        yield handle


@contextmanager
def _open_text(path: Path) -> Iterator[Any]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        yield handle
