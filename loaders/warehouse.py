"""Warehouse loaders: land files in the raw schemas exactly once, with a ledger.

One interface, three implementations. Each landed object goes through the same steps in one
transaction: lock the ledger, skip the object if the ledger already holds it (same key, same
etag), COPY it into a temporary table whose columns are named by position (``c1 .. cn``, never
from the file's header), insert the columns the raw table keeps plus the load metadata, and
write the ledger row. A file that cannot be loaded at all (no header, a required column
missing, not CSV) is refused: the transaction rolls back and the caller quarantines it.

- DuckDB reads the file itself (``read_csv``; an object on S3 is first streamed to a local
  temporary file, since the httpfs extension cannot be installed offline).
- PostgreSQL streams the object's bytes into ``COPY ... FROM STDIN``.
- Redshift runs ``COPY ... FROM 's3://...'`` with ``IAM_ROLE`` (a manifest for RDS parts).

Raw tables (all data columns text, as received)::

    raw_streams.streams   user_id, track_id, listen_time, _source_file, _line_number,
                          _loaded_at, _load_id, _load_seq    (append-only)
    raw_rds.<table>       every source column, _source_file, _loaded_at, _load_id
                          (the latest snapshot; replaced when the table changed)
    raw_meta.load_ledger  object_key, etag, size_bytes, target_table, row_count, status,
                          reason, load_id, loaded_at, superseded_at, load_seq, superseded_seq
    raw_meta.dbt_builds   load_id, started_at, finished_at, load_seq
                          (one row per run with a green dbt build)

What is new is decided by the ledger's load sequence, never by comparing clocks (workers'
clocks differ and step): each ledger row gets ``load_seq``, one more than the largest so far,
inside the load transaction (the ledger is locked there), and the stream rows it loaded carry
the same number in ``_load_seq``. A version superseded by a later one records that version's
number in ``superseded_seq``. A green build records the ledger's largest ``load_seq`` when it
started (its watermark): every load at or below it is in the marts. ``_loaded_at``,
``loaded_at``, ``superseded_at`` and the build times are kept for people and for the rule
"a listen_time later than the load time plus one day is rejected"; no watermark compares them.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import shutil
import socket
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from loaders.config import ConfigError, Settings, WarehouseSettings, check_identifier
from loaders.errors import is_bad_data, is_interrupt, outage
from loaders.landing import LandedObject, LandingStore, is_gzip
from loaders.rds import TableExtract

STREAM_COLUMNS = ("user_id", "track_id", "listen_time")
STREAMS_TABLE = "raw_streams.streams"
LEDGER_TABLE = "raw_meta.load_ledger"
BUILDS_TABLE = "raw_meta.dbt_builds"
_HEADER_BYTES = 64 * 1024
MAX_LINE_BYTES = 64 << 20  # the contract: a line up to 64 MiB loads like any other
MANIFEST_PREFIX = "manifests/"  # Redshift COPY manifests, outside the input prefix


class FileRejected(Exception):
    """The object cannot be loaded at all; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class LoadOutcome:
    """What happened to one landed object."""

    key: str
    status: str  # loaded | skipped (already in the ledger)
    rows: int = 0
    superseded: int = 0  # earlier versions of the key this one replaced


def read_header(landing: LandingStore, key: str) -> list[str]:
    """The normalised header of a CSV object (gzip or plain); FileRejected if it has none."""
    with landing.open(key) as raw:
        head = raw.read(_HEADER_BYTES)
    if not head:
        raise FileRejected("empty file: no header line")
    if is_gzip(key):
        try:
            head = gzip.GzipFile(fileobj=io.BytesIO(head)).read1(_HEADER_BYTES)
        except (OSError, EOFError) as exc:
            raise FileRejected(f"not a readable gzip file: {exc}") from None
        if not head:
            raise FileRejected("empty file: no header line")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # A multi-byte character may be cut at the end of the sample: decode the first line only.
        first, newline, _rest = head.partition(b"\n")
        try:
            text = first.decode("utf-8-sig") + newline.decode()
        except UnicodeDecodeError:
            raise FileRejected(f"header is not UTF-8 text: {exc}") from None
    first_line = text.splitlines()[0] if text else ""
    if "\x00" in first_line:
        raise FileRejected("not a CSV file: binary content in the header")
    header = next(csv.reader([first_line]), [])
    return [name.strip().lower() for name in header]


def column_positions(header: Sequence[str], required: Sequence[str]) -> dict[str, int]:
    """1-based position of each required column in ``header``; FileRejected if any is missing
    or named twice (which of the two holds the values is anybody's guess)."""
    found = ",".join(header)[:200]
    missing = [name for name in required if name not in header]
    if missing:
        raise FileRejected(f"header lacks required column(s) {', '.join(missing)} (found: {found})")
    twice = [name for name in required if header.count(name) > 1]
    if twice:
        raise FileRejected(f"header names column(s) {', '.join(twice)} twice (found: {found})")
    return {name: header.index(name) + 1 for name in required}


class Warehouse(ABC):
    """A warehouse the loaders write to. Use as a context manager; it closes its connection."""

    text_type = "text"
    placeholder = "%s"

    def __init__(self, settings: WarehouseSettings) -> None:
        self.settings = settings
        self.conn: Any = None

    # -- connection -------------------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> Any: ...

    def __enter__(self) -> Warehouse:
        self.conn = self._connect()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor inside one transaction: committed on success, rolled back on any error."""
        cur = self.conn.cursor()
        try:
            yield cur
        except BaseException:
            self.conn.rollback()
            raise
        else:
            self.conn.commit()
        finally:
            cur.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query and return its rows."""
        with self.transaction() as cur:
            cur.execute(self._sql(sql), tuple(params))
            return list(cur.fetchall())

    def _sql(self, sql: str) -> str:
        return sql.replace("%s", self.placeholder) if self.placeholder != "%s" else sql

    # -- setup and ledger -------------------------------------------------------------------
    def setup(self) -> None:
        """Create the raw schemas, the streams table, the ledger and the dbt build log if they
        do not exist; give those of an earlier version the load sequence (see the module)."""
        t = self.text_type
        with self.transaction() as cur:
            for schema in ("raw_streams", "raw_rds", "raw_meta"):
                cur.execute(f"create schema if not exists {schema}")
            cur.execute(
                f"""create table if not exists {STREAMS_TABLE} (
                    user_id {t}, track_id {t}, listen_time {t}, _source_file {t},
                    _line_number bigint, _loaded_at timestamp, _load_id {t}, _load_seq bigint)"""
            )
            cur.execute(
                f"""create table if not exists {LEDGER_TABLE} (
                    object_key {t} not null, etag {t} not null, size_bytes bigint,
                    target_table {t}, row_count bigint, status {t} not null, reason {t},
                    load_id {t}, loaded_at timestamp, superseded_at timestamp,
                    load_seq bigint, superseded_seq bigint)"""
            )
            if "superseded_at" not in self._columns(cur, "raw_meta", "load_ledger"):
                # a ledger from before re-deliveries were corrections: every version current
                cur.execute(f"alter table {LEDGER_TABLE} add column superseded_at timestamp")
            cur.execute(
                f"create table if not exists {BUILDS_TABLE} (load_id {t}, started_at timestamp, "
                "finished_at timestamp, load_seq bigint)"
            )
            if "published_at" not in self._columns(cur, "raw_meta", "dbt_builds"):
                # when readers got this build (null: not yet, the next run publishes it)
                cur.execute(f"alter table {BUILDS_TABLE} add column published_at timestamp")
            self._migrate_to_load_seq(cur)

    def _migrate_to_load_seq(self, cur: Any) -> None:
        """Number the ledger of a warehouse set up before the load sequence (in load order, as
        well as its clocks tell it, once) and carry the numbers to raw stream rows, superseded
        versions and green builds."""
        if "load_seq" in self._columns(cur, "raw_meta", "load_ledger"):
            return
        for table, column in (
            (LEDGER_TABLE, "load_seq"),
            (LEDGER_TABLE, "superseded_seq"),
            (STREAMS_TABLE, "_load_seq"),
        ):
            if column not in self._columns(cur, *table.split(".")):
                cur.execute(f"alter table {table} add column {column} bigint")
        if "load_seq" not in self._columns(cur, "raw_meta", "dbt_builds"):
            cur.execute(f"alter table {BUILDS_TABLE} add column load_seq bigint")
        version = "object_key, etag, status, load_id, loaded_at"
        matches = " and ".join(f"{LEDGER_TABLE}.{c} = numbered.{c}" for c in version.split(", "))
        cur.execute(
            f"update {LEDGER_TABLE} set load_seq = numbered.seq from (select {version}, "
            "row_number() over (order by loaded_at, load_id, object_key, etag) as seq "
            f"from {LEDGER_TABLE}) as numbered where {matches}"
        )
        cur.execute(
            f"update {LEDGER_TABLE} set superseded_seq = later.seq from (select "
            "earlier.load_seq, min(other.load_seq) as seq "
            f"from {LEDGER_TABLE} as earlier join {LEDGER_TABLE} as other "
            "on other.object_key = earlier.object_key and other.load_seq > earlier.load_seq "
            "group by earlier.load_seq) as later "
            f"where {LEDGER_TABLE}.load_seq = later.load_seq "
            f"and {LEDGER_TABLE}.superseded_at is not null"
        )
        cur.execute(
            f"update {STREAMS_TABLE} set _load_seq = {LEDGER_TABLE}.load_seq from {LEDGER_TABLE} "
            f"where {STREAMS_TABLE}._source_file = {LEDGER_TABLE}.object_key "
            f"and {STREAMS_TABLE}._loaded_at = {LEDGER_TABLE}.loaded_at "
            f"and {LEDGER_TABLE}.status = 'loaded'"
        )
        cur.execute(
            f"update {BUILDS_TABLE} set load_seq = watermarks.seq from (select builds.load_id, "
            "builds.started_at, coalesce(max(ledger.load_seq), 0) as seq "
            f"from {BUILDS_TABLE} as builds left join {LEDGER_TABLE} as ledger "
            "on ledger.loaded_at < builds.started_at group by builds.load_id, builds.started_at"
            f") as watermarks where {BUILDS_TABLE}.load_id = watermarks.load_id "
            f"and {BUILDS_TABLE}.started_at = watermarks.started_at"
        )

    def ledger(self) -> dict[str, str]:
        """The etag of the current (latest, not superseded) loaded version of each key."""
        return dict(
            self.query(
                f"select object_key, etag from {LEDGER_TABLE} "
                "where status = 'loaded' and superseded_at is null"
            )
        )

    def latest_snapshots(self) -> dict[str, tuple[str, str]]:
        """The snapshot each raw_rds table holds (the one loaded last): its ledger key (the
        landing folder of its parts) and its fingerprint (etag), by table."""
        rows = self.query(
            f"select target_table, object_key, etag from {LEDGER_TABLE} l "
            "where status = 'loaded' and target_table like %s and load_seq = "
            f"(select max(load_seq) from {LEDGER_TABLE} l2 "
            "where l2.target_table = l.target_table and l2.status = 'loaded')",
            ("raw_rds.%",),
        )
        return {table: (key, etag) for table, key, etag in rows}

    def ledger_watermark(self) -> int:
        """The ledger's largest load sequence number (0 when empty): taken just before a dbt
        build starts, every load at or below it is in the marts once that build is green."""
        (seq,) = self.query(f"select coalesce(max(load_seq), 0) from {LEDGER_TABLE}")[0]
        return int(seq)

    def has_unbuilt_loads(self) -> bool:
        """Whether anything was loaded after the watermark of the last green dbt build."""
        (count,) = self.query(
            f"select count(*) from {LEDGER_TABLE} where status = 'loaded' and load_seq > "
            f"(select coalesce(max(load_seq), 0) from {BUILDS_TABLE})"
        )[0]
        return int(count) > 0

    def green_build(self, load_id: str) -> bool:
        """Whether a green dbt build is recorded for the run ``load_id``."""
        (count,) = self.query(
            f"select count(*) from {BUILDS_TABLE} where load_id = %s", (load_id,)
        )[0]
        return int(count) > 0

    def first_loaded_at(self) -> dict[tuple[str, str], datetime]:
        """When the ledger first recorded each (key, etag) as loaded."""
        return {
            (key, etag): loaded_at
            for key, etag, loaded_at in self.query(
                f"select object_key, etag, min(loaded_at) from {LEDGER_TABLE} "
                "where status = 'loaded' group by object_key, etag"
            )
        }

    def row_counts(self, relations: Sequence[str]) -> dict[str, int]:
        """Rows in each relation (``schema.name``, as named by the dbt manifest); 0 for one
        that does not exist yet."""
        counts = {}
        for relation in relations:
            schema, name = _split_relation(relation)
            exists = self.exists(schema, name)
            counts[relation] = (
                int(self.query(f"select count(*) from {schema}.{name}")[0][0]) if exists else 0
            )
        return counts

    def preview(
        self,
        relation: str,
        *,
        columns: Sequence[str] = (),
        order_by: str = "",
        latest: str = "",
        limit: int = 8,
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and the first ``limit`` rows of ``relation`` (``columns``, else all) in
        ``order_by`` order (``"col [desc], ..."``), only those of its latest ``latest`` value
        when given."""
        schema, name = _split_relation(relation)
        picked = ", ".join(check_identifier(c, "column") for c in columns) or "*"
        terms = []
        for term in filter(None, (t.strip() for t in order_by.split(","))):
            column, _, direction = term.partition(" ")
            if direction.strip().lower() not in ("", "asc", "desc"):
                raise ConfigError(f"preview order {term!r} of {relation} is not 'column [desc]'")
            terms.append(f"{check_identifier(column, 'column')} {direction.strip().lower()}")
        sql = f"select {picked} from {schema}.{name}"
        if latest:
            column = check_identifier(latest, "column")
            sql += f" where {column} = (select max({column}) from {schema}.{name})"
        if terms:
            sql += " order by " + ", ".join(terms)
        sql += f" limit {int(limit)}"
        with self.transaction() as cur:
            cur.execute(sql)
            names = [d[0] for d in cur.description]
            return names, list(cur.fetchall())

    def exists(self, schema: str, name: str) -> bool:
        """Whether the table or view ``schema.name`` exists."""
        with self.transaction() as cur:
            cur.execute(
                self._sql(
                    "select count(*) from information_schema.tables "
                    "where table_schema = %s and table_name = %s"
                ),
                (schema, name),
            )
            return int(cur.fetchone()[0]) > 0

    def rejected_rows_by_reason(self, relation: str, load_id: str) -> dict[str, int]:
        """Rows of one load that the cleaning rules rejected (dbt's rejects mart), by reason."""
        schema, name = _split_relation(relation)
        if not self.exists(schema, name):
            return {}
        rows = self.query(
            f"select reject_reason, count(*) from {schema}.{name} "
            "where load_id = %s group by reject_reason order by reject_reason",
            (load_id,),
        )
        return {str(reason): int(n) for reason, n in rows}

    def _lock_ledger(self, cur: Any) -> None:
        cur.execute(f"lock table {LEDGER_TABLE} in exclusive mode")

    def _in_ledger(self, cur: Any, key: str, etag: str) -> bool:
        cur.execute(
            self._sql(
                f"select count(*) from {LEDGER_TABLE} where object_key = %s and etag = %s "
                "and status = 'loaded' and superseded_at is null"
            ),
            (key, etag),
        )
        return int(cur.fetchone()[0]) > 0

    def _next_load_seq(self, cur: Any) -> int:
        """The load sequence number of the next ledger row (call with the ledger locked)."""
        cur.execute(f"select coalesce(max(load_seq), 0) + 1 from {LEDGER_TABLE}")
        return int(cur.fetchone()[0])

    def _write_ledger(
        self,
        cur: Any,
        obj: LandedObject,
        target: str,
        rows: int,
        load_id: str,
        loaded_at: datetime,
        load_seq: int,
        reason: str | None = None,
    ) -> int:
        """Record a landed version of ``obj.key`` as load ``load_seq``; every earlier version of
        that key becomes superseded by it (the contract's re-delivery rule: the latest version
        counts). Returns how many versions it superseded."""
        cur.execute(
            self._sql(
                f"select count(*) from {LEDGER_TABLE} "
                "where object_key = %s and superseded_at is null"
            ),
            (obj.key,),
        )
        superseded = int(cur.fetchone()[0])
        if superseded:
            cur.execute(
                self._sql(
                    f"update {LEDGER_TABLE} set superseded_at = %s, superseded_seq = %s "
                    "where object_key = %s and superseded_at is null"
                ),
                (loaded_at, load_seq, obj.key),
            )
        cur.execute(
            self._sql(
                f"insert into {LEDGER_TABLE} (object_key, etag, size_bytes, target_table, "
                "row_count, status, reason, load_id, loaded_at, load_seq) "
                "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ),
            (
                obj.key,
                obj.etag,
                obj.size,
                target,
                rows,
                "rejected" if reason else "loaded",
                reason,
                load_id,
                loaded_at,
                load_seq,
            ),
        )
        return superseded

    def record_build(
        self, load_id: str, load_seq: int, started: datetime, finished: datetime
    ) -> None:
        """Record the green dbt build of run ``load_id``, which started when the ledger's
        watermark was ``load_seq``: loads up to it are in the marts. A run has one row: a
        second green build of the same run replaces it."""
        with self.transaction() as cur:
            cur.execute(self._sql(f"delete from {BUILDS_TABLE} where load_id = %s"), (load_id,))
            cur.execute(
                self._sql(
                    f"insert into {BUILDS_TABLE} (load_id, started_at, finished_at, load_seq) "
                    "values (%s, %s, %s, %s)"
                ),
                (load_id, started, finished, load_seq),
            )

    def record_rejected(
        self, obj: LandedObject, target: str, reason: str, load_id: str, loaded_at: datetime
    ) -> datetime | None:
        """Record a refused object in the ledger with its reason. It supersedes nothing: a
        version that cannot be loaded at all is not a correction, and the version loaded
        before it stays current. Returns when that earlier version was loaded (None when the
        key has no loaded version), for the run's warning."""
        with self.transaction() as cur:
            self._lock_ledger(cur)
            cur.execute(
                self._sql(
                    f"select max(loaded_at) from {LEDGER_TABLE} where object_key = %s "
                    "and status = 'loaded' and superseded_at is null"
                ),
                (obj.key,),
            )
            current = cur.fetchone()[0]
            cur.execute(
                self._sql(
                    f"insert into {LEDGER_TABLE} (object_key, etag, size_bytes, target_table, "
                    "row_count, status, reason, load_id, loaded_at, load_seq) "
                    "values (%s, %s, %s, %s, 0, 'rejected', %s, %s, %s, %s)"
                ),
                (
                    obj.key,
                    obj.etag,
                    obj.size,
                    target,
                    reason,
                    load_id,
                    loaded_at,
                    self._next_load_seq(cur),
                ),
            )
        return current

    def correction_effect(self, staged: str, key: str, load_id: str) -> tuple[int, int] | None:
        """What the version of ``key`` loaded by ``load_id`` changed against the version it
        superseded: the kept plays (user, track, UTC time, after the cleaning rules) found only
        in the new version and only in the old one, read from the staged rows (``staged``, the
        dbt staging model) of those two versions. None when either version is not there."""
        schema, name = _split_relation(staged)
        (new_seq,) = self.query(
            f"select max(load_seq) from {LEDGER_TABLE} where object_key = %s "
            "and load_id = %s and status = 'loaded'",
            (key, load_id),
        )[0]
        if new_seq is None:
            return None
        (old_seq,) = self.query(
            f"select max(load_seq) from {LEDGER_TABLE} where object_key = %s "
            "and status = 'loaded' and superseded_seq = %s",
            (key, new_seq),
        )[0]
        if old_seq is None or not self.exists(schema, name):
            return None
        added, removed = self.query(
            "select coalesce(sum(case when in_new = 1 and in_old = 0 then 1 else 0 end), 0), "
            "coalesce(sum(case when in_old = 1 and in_new = 0 then 1 else 0 end), 0) from ("
            "select user_id, track_id, listen_time, "
            "max(case when _load_seq = %s then 1 else 0 end) as in_new, "
            "max(case when _load_seq = %s then 1 else 0 end) as in_old "
            f"from {schema}.{name} where _source_file = %s and reject_reason is null "
            "and _load_seq in (%s, %s) group by user_id, track_id, listen_time) as plays",
            (new_seq, old_seq, key, new_seq, old_seq),
        )[0]
        return int(added), int(removed)

    # -- loading ----------------------------------------------------------------------------
    def load_stream_file(
        self, landing: LandingStore, obj: LandedObject, *, load_id: str, loaded_at: datetime
    ) -> LoadOutcome:
        """Append one stream file to raw_streams.streams exactly once."""
        try:
            header = read_header(landing, obj.key)
            positions = column_positions(header, STREAM_COLUMNS)
            with self.transaction() as cur:
                self._lock_ledger(cur)
                if self._in_ledger(cur, obj.key, obj.etag):
                    return LoadOutcome(obj.key, "skipped")
                order = self._copy_to_temp(cur, landing, [obj.key], len(header))
                line_number = self._line_number(cur, order, len(header))
                picked = ", ".join(f"c{positions[name]}" for name in STREAM_COLUMNS)
                seq = self._next_load_seq(cur)
                cur.execute(
                    self._sql(
                        f"insert into {STREAMS_TABLE} ({', '.join(STREAM_COLUMNS)}, _source_file, "
                        "_line_number, _loaded_at, _load_id, _load_seq) "
                        f"select {picked}, %s, {line_number}, %s, %s, %s from _landing"
                    ),
                    (obj.key, loaded_at, load_id, seq),
                )
                rows = self._count(cur, "_landing")
                superseded = self._write_ledger(
                    cur, obj, STREAMS_TABLE, rows, load_id, loaded_at, seq
                )
                self._drop_temp(cur)
        except FileRejected:
            raise
        except Exception as exc:
            if is_interrupt(exc):
                raise
            if not is_bad_data(exc):
                raise outage(exc, obj.key) from exc
            raise FileRejected(rejection_reason(exc)) from None
        return LoadOutcome(obj.key, "loaded", rows, superseded)

    def load_snapshot(
        self,
        landing: LandingStore,
        extract: TableExtract,
        *,
        load_id: str,
        loaded_at: datetime,
    ) -> LoadOutcome:
        """Replace the rows of raw_rds.<table> with an extracted snapshot, unless the ledger has it.

        The table is kept, never dropped: the staging views that read it stay valid on
        warehouses that track view dependencies (PostgreSQL, Redshift). A column the source
        gained is added (as text); one it lost stays, empty. Delete, insert and ledger row
        commit in one transaction (DELETE, not TRUNCATE, which commits on Redshift).
        """
        table = f"raw_rds.{check_identifier(extract.table, 'RDS table')}"
        columns = [check_identifier(c, f"column of {extract.table}") for c in extract.columns]
        obj = LandedObject(key=extract.prefix, size=extract.size_bytes, etag=extract.sha256)
        t = self.text_type
        with self.transaction() as cur:
            self._lock_ledger(cur)
            if self._in_ledger(cur, obj.key, obj.etag) or self._snapshot_unchanged(cur, extract):
                return LoadOutcome(obj.key, "skipped")
            existing = self._columns(cur, "raw_rds", extract.table)
            if not existing:
                column_defs = ", ".join(f'"{c}" {t}' for c in columns)
                cur.execute(
                    f"create table {table} ({column_defs}, _source_file {t}, "
                    f"_loaded_at timestamp, _load_id {t})"
                )
            for column in columns:
                if existing and column not in existing:
                    cur.execute(f'alter table {table} add column "{column}" {t}')
            cur.execute(f"delete from {table}")
            if extract.parts:
                self._copy_to_temp(cur, landing, list(extract.parts), len(columns))
                names = ", ".join(f'"{c}"' for c in columns)
                picked = ", ".join(f"c{i}" for i in range(1, len(columns) + 1))
                cur.execute(
                    self._sql(
                        f"insert into {table} ({names}, _source_file, _loaded_at, _load_id) "
                        f"select {picked}, %s, %s, %s from _landing"
                    ),
                    (extract.prefix, loaded_at, load_id),
                )
                self._drop_temp(cur)
            seq = self._next_load_seq(cur)
            self._write_ledger(cur, obj, table, extract.row_count, load_id, loaded_at, seq)
        return LoadOutcome(obj.key, "loaded", extract.row_count)

    def _columns(self, cur: Any, schema: str, table: str) -> set[str]:
        """The column names of ``schema.table`` (empty when it does not exist)."""
        cur.execute(
            self._sql(
                "select column_name from information_schema.columns "
                "where table_schema = %s and table_name = %s"
            ),
            (schema, table),
        )
        return {str(name) for (name,) in cur.fetchall()}

    def _snapshot_unchanged(self, cur: Any, extract: TableExtract) -> bool:
        """True when the last snapshot loaded for this table has the same content."""
        cur.execute(
            self._sql(
                f"select etag from {LEDGER_TABLE} where target_table = %s and status = 'loaded' "
                "order by load_seq desc limit 1"
            ),
            (f"raw_rds.{extract.table}",),
        )
        row = cur.fetchone()
        return row is not None and row[0] == extract.sha256

    def _count(self, cur: Any, table: str) -> int:
        cur.execute(f"select count(*) from {table}")
        return int(cur.fetchone()[0])

    def _drop_temp(self, cur: Any) -> None:
        cur.execute("drop table _landing")

    @abstractmethod
    def _copy_to_temp(
        self, cur: Any, landing: LandingStore, keys: list[str], n_columns: int
    ) -> str | None:
        """COPY the objects (same header, which is skipped) into a temporary table
        ``_landing(c1 .. cn)``. Returns the column that follows the input's order (None when
        the warehouse keeps no order)."""

    def _line_number(self, cur: Any, order_column: str | None, n_columns: int) -> str:
        """SQL for the physical line of each row of ``_landing`` (the header is line 1). A file
        with no line break inside a quoted field (nearly all) has one line per record, so the
        line follows from the order column alone; otherwise see :func:`physical_line`."""
        if order_column is None:
            return "null"
        broken = " or ".join(f"strpos(c{i}, chr(10)) > 0" for i in range(1, n_columns + 1))
        cur.execute(
            f"select min({order_column}), sum(case when {broken} then 1 else 0 end) from _landing"
        )
        first, multiline = cur.fetchone()
        if first is not None and not multiline:
            return f"{order_column} - {int(first)} + 2"
        return physical_line(order_column, n_columns)


class DuckDBWarehouse(Warehouse):
    """The embedded default: a DuckDB file, one writer at a time."""

    placeholder = "?"

    def _connect(self) -> Any:
        import duckdb

        path = self.settings.duckdb_path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # memory limit, threads, spill directory: the same config dbt-duckdb opens with
            return duckdb.connect(str(path), config={**self.settings.duckdb_settings()})
        except duckdb.IOException as exc:
            raise ConnectionError(
                f"cannot open the DuckDB warehouse {path}: {_one_line(exc)} "
                "(another process, such as a dbt run, may be writing it)"
            ) from None

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        # A DuckDB cursor is a second connection with its own transactions: use the connection.
        self.conn.execute("begin transaction")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("rollback")
            raise
        else:
            self.conn.execute("commit")

    def _lock_ledger(self, cur: Any) -> None:
        """DuckDB allows one writing process, which is this one."""

    def _copy_to_temp(
        self, cur: Any, landing: LandingStore, keys: list[str], n_columns: int
    ) -> str | None:
        columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(1, n_columns + 1)) + "}"
        compression = "gzip" if is_gzip(keys[0]) else "none"
        with _safely_named_copies(landing, keys) as paths:
            cur.execute(
                "create temp table _landing as select * from read_csv(?, header = true, "
                f"auto_detect = false, columns = {columns}, delim = ',', quote = '\"', "
                "escape = '\"', strict_mode = true, null_padding = false, "
                f"compression = '{compression}', max_line_size = {MAX_LINE_BYTES})",
                ([str(p) for p in paths],),
            )
        return "rowid"  # the temporary table keeps the file's row order (rowids follow it)


class PostgresWarehouse(Warehouse):
    """A PostgreSQL warehouse: object bytes stream into COPY ... FROM STDIN."""

    def _connect(self) -> Any:
        import psycopg2

        s = self.settings
        try:
            return psycopg2.connect(
                host=s.host,
                port=s.port,
                user=s.user,
                password=s.password,
                dbname=s.dbname,
                connect_timeout=15,
                application_name=f"music-elt pid {os.getpid()}@{socket.gethostname()}"[:63],
            )
        except psycopg2.OperationalError as exc:
            raise ConnectionError(
                f"cannot reach the {s.kind} warehouse {s.user}@{s.host}:{s.port}/{s.dbname}: "
                f"{_one_line(exc)}"
            ) from None

    def _copy_to_temp(
        self, cur: Any, landing: LandingStore, keys: list[str], n_columns: int
    ) -> str | None:
        columns = ", ".join(f"c{i}" for i in range(1, n_columns + 1))
        cur.execute(
            "create temp table _landing (_n bigint generated always as identity, "
            + ", ".join(f"c{i} text" for i in range(1, n_columns + 1))
            + ")"
        )
        for key in keys:
            with landing.open(key) as raw:
                stream: Any = gzip.GzipFile(fileobj=raw) if is_gzip(key) else raw
                limited = _LineLimit(stream, MAX_LINE_BYTES)
                try:
                    cur.copy_expert(
                        f"copy _landing ({columns}) from stdin with (format csv, header true)",
                        limited,
                        size=1 << 20,
                    )
                except Exception:
                    if limited.error is not None:  # psycopg2 wraps what read() raised in a
                        raise limited.error from None  # QueryCanceledError: classify the cause
                    raise
        return "_n"  # the identity follows the input order


class RedshiftWarehouse(PostgresWarehouse):
    """Amazon Redshift: ``COPY ... FROM 's3://...'`` with IAM_ROLE; objects must be on S3.

    No cluster is reachable where this project is developed: the statements are covered by
    tests on the SQL this class generates, not by runs against Redshift.
    """

    text_type = "varchar(65535)"

    def _lock_ledger(self, cur: Any) -> None:
        cur.execute(f"lock {LEDGER_TABLE}")

    def copy_statement(self, source: str, *, gzip_compressed: bool, manifest: bool) -> str:
        """The COPY that loads ``source`` (an object, or a manifest) into ``_landing``."""
        options = [
            "format as csv",
            "ignoreheader 1",
            f"iam_role '{_quote(self.settings.iam_role)}'",
        ]
        if gzip_compressed:
            options.append("gzip")
        if manifest:
            options.append("manifest")
        if self.settings.region:
            options.append(f"region '{_quote(self.settings.region)}'")
        return f"copy _landing from '{_quote(source)}' " + " ".join(options)

    def _copy_to_temp(
        self, cur: Any, landing: LandingStore, keys: list[str], n_columns: int
    ) -> str | None:
        uris = [landing.uri(key) for key in keys]
        if not all(uri.startswith("s3://") for uri in uris):
            raise ValueError("the redshift warehouse loads from S3: set MUSIC_ELT_LANDING=s3://...")
        cur.execute(
            "create temp table _landing ("
            + ", ".join(f"c{i} {self.text_type}" for i in range(1, n_columns + 1))
            + ")"
        )
        # Always through a manifest that lists each object's exact URL: COPY from a plain
        # 's3://.../x.csv' reads every object whose key starts with it (x.csv.gz, x.csv.bak).
        # The manifest lives outside the input prefix: manifests/<key>.manifest for one object,
        # manifests/<folder>/copy.manifest for the parts of a folder.
        compressed = is_gzip(keys[0])
        named = keys[0] if len(keys) == 1 else keys[0].rsplit("/", 1)[0] + "/copy"
        manifest_key = f"{MANIFEST_PREFIX}{named}.manifest"
        landing.write_text(manifest_key, redshift_manifest(uris))
        cur.execute(
            self.copy_statement(
                landing.uri(manifest_key), gzip_compressed=compressed, manifest=True
            )
        )
        return None  # COPY from S3 keeps no order: no line numbers


def physical_line(order_column: str, n_columns: int) -> str:
    """SQL for each record's physical line in its file (the header is line 1), from the records'
    order and the line breaks inside their quoted fields: record k starts after the header, the
    k records before it and every newline quoted inside them."""
    record = "concat(" + ", ".join(f"coalesce(c{i}, '')" for i in range(1, n_columns + 1)) + ")"
    newlines = f"(length({record}) - length(replace({record}, chr(10), '')))"
    return (
        f"1 + row_number() over (order by {order_column}) + coalesce(sum({newlines}) over "
        f"(order by {order_column} rows between unbounded preceding and 1 preceding), 0)"
    )


def redshift_manifest(uris: Sequence[str]) -> str:
    """A COPY manifest listing every object as mandatory."""
    return json.dumps({"entries": [{"url": uri, "mandatory": True} for uri in uris]}, indent=2)


def open_warehouse(settings: Settings) -> Warehouse:
    """The warehouse implementation for ``settings.warehouse.kind`` (not yet connected)."""
    kinds: dict[str, type[Warehouse]] = {
        "duckdb": DuckDBWarehouse,
        "postgres": PostgresWarehouse,
        "redshift": RedshiftWarehouse,
    }
    return kinds[settings.warehouse.kind](settings.warehouse)


@contextmanager
def _safely_named_copies(landing: LandingStore, keys: list[str]) -> Iterator[list[Path]]:
    """Local paths for the objects under names of digits only (``00000.csv``), so that DuckDB,
    which expands glob patterns in the paths it reads (``*``, ``?``, ``[ab]``, ``{a,b}``),
    reads each object from its own bytes: a symbolic link to a file of a local zone (DuckDB
    sees only the link's name; the kernel follows it), else the object's bytes streamed from the
    store into a temporary file."""
    with tempfile.TemporaryDirectory(prefix="music-elt-") as tmp:
        paths = []
        for i, key in enumerate(keys):
            path = Path(tmp, f"{i:05d}.csv")
            source = landing.local_path(key)
            if source is not None:
                path.symlink_to(source)
            else:
                with landing.open(key) as src, path.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            paths.append(path)
        yield paths


class _LineLimit:
    """A binary stream passing ``stream`` through that raises :class:`FileRejected` when a
    line is longer than ``limit`` bytes, the limit DuckDB applies with ``max_line_size`` (so
    that PostgreSQL, whose COPY would take up to 1 GB, refuses the same files). Reads are at
    most 1 MiB, far below the limit, so only the line across reads needs counting. What a read
    raised is kept in ``error`` (psycopg2 reports it as a cancelled COPY)."""

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream, self._limit, self._line = stream, limit, 0
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            chunk: bytes = self._stream.read(size)
            first = chunk.find(b"\n")
            if first >= 0 and self._line + first > self._limit:
                raise FileRejected(long_line_reason())
            self._line = (
                self._line + len(chunk) if first < 0 else len(chunk) - chunk.rfind(b"\n") - 1
            )
            if self._line > self._limit:
                raise FileRejected(long_line_reason())
        except BaseException as exc:
            self.error = exc
            raise
        return chunk


def long_line_reason() -> str:
    """Why a file with a line longer than the limit is refused."""
    return (
        f"a line is longer than {MAX_LINE_BYTES >> 20} MiB, the longest a stream file may "
        "hold: split the file's long values or lines"
    )


def _split_relation(relation: str) -> tuple[str, str]:
    schema, _, name = relation.partition(".")
    return check_identifier(schema, "schema"), check_identifier(name, "relation")


# The name DuckDB read a file under (:func:`_safely_named_copies`) means nothing to a reader.
_TEMPORARY_COPY = re.compile(r":? ?\S*music-elt-[^/\s]+/\d{5}\.csv")


def rejection_reason(exc: BaseException) -> str:
    """One line saying why a warehouse could not load a file's bytes."""
    text = _TEMPORARY_COPY.sub("", str(exc))
    if re.search(r"(?i)maximum line size", text):
        return long_line_reason()
    if re.search(r"(?i)unicode|not utf-?8|invalid byte sequence|encoding", text):
        return f"not UTF-8 text: {_one_line(ValueError(text))}"
    return f"not loadable as CSV: {_one_line(ValueError(text))}"


def _quote(text: str) -> str:
    return text.replace("'", "''")


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(lines[:2])[:500] if lines else type(exc).__name__
