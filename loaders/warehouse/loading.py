"""Loading: land files in the raw schemas exactly once, with their ledger rows.

A load group (the plan's unit: some new stream files, or one changed RDS table) is one
transaction: lock the ledger, and for each object skip it if the ledger already holds it (same
key, same etag), COPY it into a temporary table whose columns are named by position (``c1 ..
cn``, never from the file's header), insert the columns the raw table keeps plus the load
metadata, and write the ledger row. The group commits once, so commits grow with groups, not
files. A file that cannot be loaded at all (no header, a required column missing, not CSV) is
refused: the group's transaction rolls back, the file is reported as rejected (the caller
quarantines it) and the group is loaded again without it. Any other error (an outage) rolls the
group back and fails the run.

Each stream file gets a COPY of its own, because the rows of a COPY of several files do not say
which file they came from, and the marts need that (which version of a file each play came
from, for corrections). The parts of an RDS snapshot are one COPY: its rows all belong to the
snapshot.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loaders.config import check_identifier
from loaders.errors import ServiceOutage, is_bad_data, is_interrupt, outage
from loaders.landing import LandedObject, LandingStore
from loaders.rds import TableExtract
from loaders.warehouse.csv_files import (
    FileRejected,
    column_positions,
    read_header,
    rejection_reason,
)
from loaders.warehouse.ledger import (
    RDS_SCHEMA,
    STREAM_COLUMNS,
    STREAMS_TABLE,
    Ledger,
    snapshot_table,
)
from loaders.warehouse.reporting import Reporting


@dataclass(frozen=True)
class LoadOutcome:
    """What happened to one landed object."""

    key: str
    status: str  # loaded | skipped (already in the ledger) | rejected (cannot be loaded)
    rows: int = 0
    superseded: int = 0  # earlier versions of the key this one replaced
    reason: str = ""  # why a rejected object cannot be loaded


class _Refused(Exception):
    """One file of a group cannot be loaded: roll the group back, then load it without it."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key, self.reason = key, reason


class Warehouse(Ledger, Reporting):
    """A warehouse the loaders write to (DuckDB, PostgreSQL, Redshift)."""

    def __enter__(self) -> Warehouse:
        self.conn = self._connect()
        return self

    # -- stream files -----------------------------------------------------------------------
    def load_stream_files(
        self,
        landing: LandingStore,
        objects: Sequence[LandedObject],
        *,
        load_id: str,
        loaded_at: datetime,
    ) -> list[LoadOutcome]:
        """Append stream files to raw_streams.streams exactly once, in one transaction; one
        outcome per object, in order. A service failure raises
        :class:`loaders.errors.ServiceOutage` and loads none of them."""
        outcomes: dict[str, LoadOutcome] = {}
        headers: dict[str, list[str]] = {}
        for obj in objects:
            try:
                headers[obj.key] = read_header(landing, obj.key)
                column_positions(headers[obj.key], STREAM_COLUMNS)
            except Exception as exc:
                outcomes[obj.key] = LoadOutcome(obj.key, "rejected", reason=_refusal(exc, obj))
        pending = [obj for obj in objects if obj.key not in outcomes]
        while pending:
            try:
                outcomes.update(self._load_group(landing, pending, headers, load_id, loaded_at))
                break
            except _Refused as refused:  # rolled back: load the others again without it
                outcomes[refused.key] = LoadOutcome(refused.key, "rejected", reason=refused.reason)
                pending = [obj for obj in pending if obj.key != refused.key]
        return [outcomes[obj.key] for obj in objects]

    def load_stream_file(
        self, landing: LandingStore, obj: LandedObject, *, load_id: str, loaded_at: datetime
    ) -> LoadOutcome:
        """One stream file (:meth:`load_stream_files`); FileRejected when it cannot be loaded."""
        (outcome,) = self.load_stream_files(landing, [obj], load_id=load_id, loaded_at=loaded_at)
        if outcome.status == "rejected":
            raise FileRejected(outcome.reason)
        return outcome

    def _load_group(
        self,
        landing: LandingStore,
        objects: Sequence[LandedObject],
        headers: dict[str, list[str]],
        load_id: str,
        loaded_at: datetime,
    ) -> dict[str, LoadOutcome]:
        outcomes = {}
        with self.transaction() as cur:
            self._lock_ledger(cur)
            for obj in objects:
                try:
                    outcomes[obj.key] = self._load_one(
                        cur, landing, obj, headers[obj.key], load_id, loaded_at
                    )
                except Exception as exc:
                    raise _Refused(obj.key, _refusal(exc, obj)) from None
        return outcomes

    def _load_one(
        self,
        cur: Any,
        landing: LandingStore,
        obj: LandedObject,
        header: list[str],
        load_id: str,
        loaded_at: datetime,
    ) -> LoadOutcome:
        if self._in_ledger(cur, obj.key, obj.etag):
            return LoadOutcome(obj.key, "skipped")
        positions = column_positions(header, STREAM_COLUMNS)
        order = self._copy_to_temp(cur, landing, [obj], len(header))
        rows = self._copied_rows(cur)
        self._check_values(cur, STREAMS_TABLE, {c: f"c{positions[c]}" for c in STREAM_COLUMNS})
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
        superseded = self._write_ledger(cur, obj, STREAMS_TABLE, rows, load_id, loaded_at, seq)
        self._drop_temp(cur)
        return LoadOutcome(obj.key, "loaded", rows, superseded)

    # -- RDS snapshots ----------------------------------------------------------------------
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
        commit in one transaction (DELETE, not TRUNCATE, which commits on Redshift). The parts
        are one COPY, whose row count must be the extract's: else the parts changed in the
        landing zone since they were written, and nothing is loaded.
        """
        table = snapshot_table(check_identifier(extract.table, "RDS table"))
        columns = [check_identifier(c, f"column of {extract.table}") for c in extract.columns]
        obj = LandedObject(key=extract.prefix, size=extract.size_bytes, etag=extract.sha256)
        with self.transaction() as cur:
            self._lock_ledger(cur)
            if self._in_ledger(cur, obj.key, obj.etag) or self._snapshot_unchanged(cur, extract):
                return LoadOutcome(obj.key, "skipped")
            existing = self._columns(cur, RDS_SCHEMA, extract.table)
            if not existing:
                t = self.column_type(table, "")
                column_defs = ", ".join(f'"{c}" {t}' for c in columns)
                cur.execute(
                    f"create table {table} ({column_defs}, _source_file {t}, "
                    f"_loaded_at timestamp, _load_id {t})"
                )
            for column in columns:
                if existing and column not in existing:
                    cur.execute(
                        f'alter table {table} add column "{column}" {self.column_type(table, "")}'
                    )
            cur.execute(f"delete from {table}")
            if extract.parts:
                parts = _parts(landing, extract)
                self._copy_to_temp(cur, landing, parts, len(columns))
                copied = self._copied_rows(cur)
                if copied != extract.row_count:
                    raise ServiceOutage(
                        f"{table}: the COPY of {extract.prefix} loaded {copied} rows, the "
                        f"extract wrote {extract.row_count}: its parts changed in the landing "
                        "zone (nothing was loaded; the next run extracts again)"
                    )
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

    # -- what each warehouse does its own way -----------------------------------------------
    @abstractmethod
    def _copy_to_temp(
        self, cur: Any, landing: LandingStore, objects: Sequence[LandedObject], n_columns: int
    ) -> str | None:
        """COPY the objects (same header, which is skipped) into a temporary table
        ``_landing(c1 .. cn)``. Returns the column that follows the input's order (None when
        the warehouse keeps no order)."""

    def _copied_rows(self, cur: Any) -> int:
        """How many rows the COPY into ``_landing`` loaded."""
        return self._count(cur, "_landing")

    def _check_values(self, cur: Any, table: str, columns: dict[str, str]) -> None:
        """Refuse the file when a value of ``_landing`` does not fit the raw column it goes to
        (``columns``: raw column -> ``_landing`` column). Text of any length fits here."""

    def _drop_temp(self, cur: Any) -> None:
        cur.execute("drop table _landing")

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


def _refusal(exc: BaseException, obj: LandedObject) -> str:
    """Why ``obj`` cannot be loaded, when ``exc`` is about its bytes; an interrupt or an outage
    (any other error) is raised again, the outage as a one-line ServiceOutage naming the key."""
    if isinstance(exc, FileRejected):
        return exc.reason
    if is_interrupt(exc):
        raise exc
    if not is_bad_data(exc):
        raise outage(exc, obj.key) from exc
    return rejection_reason(exc)


def _parts(landing: LandingStore, extract: TableExtract) -> list[LandedObject]:
    """The landed parts of an extract with their sizes (for the COPY manifest)."""
    listed = {obj.key: obj for obj in landing.list(extract.prefix)}
    missing = [key for key in extract.parts if key not in listed]
    if missing:
        raise ServiceOutage(
            f"the extract {extract.prefix} lacks its part {missing[0]} in the landing zone "
            "(nothing was loaded; the next run extracts again)"
        )
    return [listed[key] for key in extract.parts]


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
