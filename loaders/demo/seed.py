"""Fill a source database and the landing zone from a data directory (``music-elt seed``).

A data directory holds ``users.csv``, ``songs.csv`` (or ``.csv.gz``) and ``streams/*.csv[.gz]``,
as :mod:`loaders.demo.generate` writes it. Seeding replaces the source tables with the CSV
rows and copies stream files the landing zone has not seen (by name) into ``streams/``, as the
producers would. This is test and demo tooling: production never seeds its RDS.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from psycopg2 import sql

from loaders import pipeline, rds
from loaders.config import ConfigError, Settings, check_identifier
from loaders.landing import ARCHIVE_PREFIX, STREAMS_PREFIX, is_stream_file_name

Progress = Callable[[str], None]

# Columns the pipeline relies on (the KPI contract); seeding types them, everything else stays text.
_TYPED_COLUMNS = {
    "user_id": "bigint",
    "user_age": "integer",
    "popularity": "integer",
    "duration_ms": "bigint",
}


def seed(
    settings: Settings,
    from_dir: Path,
    *,
    replace_source_tables: bool = False,
    progress: Progress = print,
) -> None:
    """Load users/songs into the RDS and copy stream files that are new by name into landing.

    Seeding replaces the source tables, so a real database (MUSIC_ELT_RDS_DSN) is only seeded
    when ``replace_source_tables`` says so.
    """
    if not from_dir.is_dir():
        raise ConfigError(f"--from-dir {from_dir}: no such directory")
    if not settings.embedded_rds and not replace_source_tables:
        raise ConfigError(
            "seed drops and reloads the source tables, and MUSIC_ELT_RDS_DSN names a real "
            "database: pass --replace-source-tables if that is what you want"
        )
    tables = {}
    for table in settings.rds_tables:
        candidates = [from_dir / f"{table}.csv", from_dir / f"{table}.csv.gz"]
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            raise ConfigError(f"{from_dir} has no {table}.csv (or {table}.csv.gz)")
        tables[table] = found
    where = f"embedded, {settings.pgdata}" if settings.embedded_rds else "MUSIC_ELT_RDS_DSN"
    with rds.connect(settings) as conn:
        seeded = [
            f"{table} {seed_table(conn, table, path):,} rows" for table, path in tables.items()
        ]
    progress(f"==> seed RDS ({where}): {', '.join(seeded)}")
    landing = pipeline.landing_store(settings)
    streams_dir = from_dir / "streams"
    files = sorted(
        p for p in (streams_dir.rglob("*") if streams_dir.is_dir() else []) if p.is_file()
    )
    known = {obj.key.rsplit("/", 1)[-1] for obj in landing.list(STREAMS_PREFIX)}
    known |= {obj.key.rsplit("/", 1)[-1] for obj in landing.list(ARCHIVE_PREFIX + STREAMS_PREFIX)}
    copied = 0
    for path in files:
        if not is_stream_file_name(path.name) or path.name in known:
            continue
        landing.put(STREAMS_PREFIX + path.relative_to(streams_dir).as_posix(), path)
        copied += 1
    progress(
        f"==> landing {landing.url}: {copied} new stream file(s) copied, "
        f"{len(files) - copied} already known or not CSV"
    )


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
    missing = [c for c in rds.REQUIRED_COLUMNS.get(table, ()) if c not in columns]
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


@contextmanager
def _open_binary(path: Path) -> Iterator[Any]:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as handle:
        yield handle


@contextmanager
def _open_text(path: Path) -> Iterator[Any]:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        yield handle
