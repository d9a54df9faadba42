"""The ledger: which landed object versions the warehouse holds, in which load, and the log of
green dbt builds. The raw schemas and tables are created here (:meth:`Ledger.setup`).

Raw tables (all data columns text, as received)::

    raw_streams.streams   user_id, track_id, listen_time, _source_file, _line_number,
                          _loaded_at, _load_id, _load_seq    (append-only)
    raw_rds.<table>       every source column, _source_file, _loaded_at, _load_id
                          (the latest snapshot; replaced when the table changed)
    raw_meta.load_ledger  object_key, etag, size_bytes, target_table, row_count, status,
                          reason, load_id, loaded_at, superseded_at, load_seq, superseded_seq
    raw_meta.dbt_builds   load_id, started_at, finished_at, load_seq, published_at
                          (one row per run with a green dbt build)

Views over them, the one definition of "loads since the last green build" (the loaders read
them before dbt runs; dbt's sources meta.last_green_build and meta.unbuilt_loads name them)::

    raw_meta.last_green_build   load_seq: the last green build's watermark (0 before any)
    raw_meta.unbuilt_loads      object_key, etag, target_table, load_id, load_seq: the ledger
                                rows loaded above that watermark (not in the marts yet)

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

from datetime import datetime
from typing import Any

from loaders.landing import LandedObject
from loaders.rds import TableExtract
from loaders.warehouse.session import Session

STREAM_COLUMNS = ("user_id", "track_id", "listen_time")
# The raw tables as the ledger's target_table names them; dbt's sources name the same tables
# (dbt_project/models/staging/*/_*__sources.yml, checked by tests/unit/test_vocabulary.py).
STREAMS_TABLE = "raw_streams.streams"
RDS_SCHEMA = "raw_rds"
LEDGER_TABLE = "raw_meta.load_ledger"
BUILDS_TABLE = "raw_meta.dbt_builds"
LAST_GREEN_BUILD = "raw_meta.last_green_build"
UNBUILT_LOADS = "raw_meta.unbuilt_loads"
RAW_SCHEMAS = ("raw_streams", RDS_SCHEMA, "raw_meta")
# A ledger row no later version of its key superseded (whatever its status), and one that is
# the current version of its key: loaded, not superseded. The loaders' test, before dbt runs;
# the models and readers use stg_meta__landed_objects.is_current, on the same column
# (superseded_at is written with superseded_seq, for people).
NOT_SUPERSEDED = "superseded_seq is null"
CURRENT_VERSION = f"status = 'loaded' and {NOT_SUPERSEDED}"
# The snapshot each raw_rds table holds: its last loaded version.
_LATEST_SNAPSHOTS = (
    f"select target_table, object_key, etag from {LEDGER_TABLE} l "
    "where status = 'loaded' and target_table like %s and load_seq = "
    f"(select max(load_seq) from {LEDGER_TABLE} l2 "
    "where l2.target_table = l.target_table and l2.status = 'loaded')"
)
# The views, in creation order (see the module)
_VIEWS = {
    LAST_GREEN_BUILD: f"select coalesce(max(load_seq), 0) as load_seq from {BUILDS_TABLE}",
    UNBUILT_LOADS: "select object_key, etag, target_table, load_id, load_seq "
    f"from {LEDGER_TABLE} where status = 'loaded' "
    f"and load_seq > (select load_seq from {LAST_GREEN_BUILD})",
}
REASON_CHARS = 1000  # a ledger reason is at most this long (the loaders' own one-line messages)


def snapshot_table(table: str) -> str:
    """The raw table an RDS table's snapshots are loaded into (its ledger target_table)."""
    return f"{RDS_SCHEMA}.{table}"


class Ledger(Session):
    """The raw schemas, the load ledger and the build log of one warehouse."""

    def table_options(self, table: str) -> str:
        """What follows the column list in ``create table`` (Redshift: a sort key)."""
        return ""

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        """Create the raw schemas, the streams table, the ledger, the dbt build log and the
        views over them if they do not exist; give those of an earlier version the load
        sequence (see the module).

        Each schema and table is looked up first and created only when missing: ``create
        schema if not exists`` needs CREATE on the database even when the schema exists (on
        PostgreSQL it fails then), so a loader whose schemas an administrator created needs
        no privilege on the database."""
        with self.transaction() as cur:
            for schema in RAW_SCHEMAS:
                if not self._schema_exists(cur, schema):
                    cur.execute(f"create schema {schema}")
            self._create_table(
                cur,
                STREAMS_TABLE,
                (
                    *(f"{c} {self.column_type(STREAMS_TABLE, c)}" for c in STREAM_COLUMNS),
                    f"_source_file {self.column_type(STREAMS_TABLE, '_source_file')}",
                    "_line_number bigint",
                    "_loaded_at timestamp",
                    f"_load_id {self.column_type(STREAMS_TABLE, '_load_id')}",
                    "_load_seq bigint",
                ),
            )
            ledger_type = self._ledger_type
            self._create_table(
                cur,
                LEDGER_TABLE,
                (
                    f"object_key {ledger_type('object_key')} not null",
                    f"etag {ledger_type('etag')} not null",
                    "size_bytes bigint",
                    f"target_table {ledger_type('target_table')}",
                    "row_count bigint",
                    f"status {ledger_type('status')} not null",
                    f"reason {ledger_type('reason')}",
                    f"load_id {ledger_type('load_id')}",
                    "loaded_at timestamp",
                    "superseded_at timestamp",
                    "load_seq bigint",
                    "superseded_seq bigint",
                ),
            )
            if "superseded_at" not in self._columns(cur, "raw_meta", "load_ledger"):
                # a ledger from before re-deliveries were corrections: every version current
                cur.execute(f"alter table {LEDGER_TABLE} add column superseded_at timestamp")
            self._create_table(
                cur,
                BUILDS_TABLE,
                (
                    f"load_id {self.column_type(BUILDS_TABLE, 'load_id')}",
                    "started_at timestamp",
                    "finished_at timestamp",
                    "load_seq bigint",
                    "published_at timestamp",
                ),
            )
            if "published_at" not in self._columns(cur, "raw_meta", "dbt_builds"):
                # when readers got this build (null: not yet, the next run publishes it)
                cur.execute(f"alter table {BUILDS_TABLE} add column published_at timestamp")
            self._migrate_to_load_seq(cur)
            for view, query in _VIEWS.items():
                if not self._columns(cur, *view.split(".")):
                    cur.execute(f"create view {view} as {query}")

    def _ledger_type(self, column: str) -> str:
        return self.column_type(LEDGER_TABLE, column)

    def _create_table(self, cur: Any, table: str, columns: tuple[str, ...]) -> None:
        """``create table`` unless it exists (looked up first, see :meth:`setup`)."""
        if self._columns(cur, *table.split(".")):
            return
        cur.execute(f"create table {table} ({', '.join(columns)}){self.table_options(table)}")

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

    # -- reads ------------------------------------------------------------------------------
    def ledger(self) -> dict[str, str]:
        """The etag of the current (latest, not superseded) loaded version of each key."""
        return dict(
            self.query(f"select object_key, etag from {LEDGER_TABLE} where {CURRENT_VERSION}")
        )

    def latest_snapshots(self) -> dict[str, tuple[str, str]]:
        """The snapshot each raw_rds table holds (the one loaded last): its ledger key (the
        landing folder of its parts) and its fingerprint (etag), by table."""
        with self.transaction() as cur:
            return self._latest_snapshots(cur)

    def _latest_snapshots(self, cur: Any) -> dict[str, tuple[str, str]]:
        cur.execute(self._sql(_LATEST_SNAPSHOTS), (snapshot_table("%"),))
        return {table: (key, etag) for table, key, etag in cur.fetchall()}

    def ledger_watermark(self) -> int:
        """The ledger's largest load sequence number (0 when empty): taken just before a dbt
        build starts, every load at or below it is in the marts once that build is green."""
        (seq,) = self.query(f"select coalesce(max(load_seq), 0) from {LEDGER_TABLE}")[0]
        return int(seq)

    def has_unbuilt_loads(self) -> bool:
        """Whether anything was loaded after the watermark of the last green dbt build (the
        view raw_meta.unbuilt_loads, which the models read too: macros/stale_periods.sql)."""
        (count,) = self.query(f"select count(*) from {UNBUILT_LOADS}")[0]
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

    # -- writes (inside a load transaction) -------------------------------------------------
    def _lock_ledger(self, cur: Any) -> None:
        cur.execute(f"lock table {LEDGER_TABLE} in exclusive mode")

    def _in_ledger(self, cur: Any, key: str, etag: str) -> bool:
        cur.execute(
            self._sql(
                f"select count(*) from {LEDGER_TABLE} where object_key = %s and etag = %s "
                f"and {CURRENT_VERSION}"
            ),
            (key, etag),
        )
        return int(cur.fetchone()[0]) > 0

    def _snapshot_unchanged(self, cur: Any, extract: TableExtract) -> bool:
        """True when the last snapshot loaded for this table has the same content."""
        latest = self._latest_snapshots(cur).get(snapshot_table(extract.table))
        return latest is not None and latest[1] == extract.sha256

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
    ) -> int:
        """Record a landed version of ``obj.key`` as load ``load_seq``; every earlier version of
        that key becomes superseded by it (the contract's re-delivery rule: the latest version
        counts). Returns how many versions it superseded."""
        cur.execute(
            self._sql(
                f"select count(*) from {LEDGER_TABLE} where object_key = %s and {NOT_SUPERSEDED}"
            ),
            (obj.key,),
        )
        superseded = int(cur.fetchone()[0])
        if superseded:
            cur.execute(
                self._sql(
                    f"update {LEDGER_TABLE} set superseded_at = %s, superseded_seq = %s "
                    f"where object_key = %s and {NOT_SUPERSEDED}"
                ),
                (loaded_at, load_seq, obj.key),
            )
        cur.execute(
            self._sql(
                f"insert into {LEDGER_TABLE} (object_key, etag, size_bytes, target_table, "
                "row_count, status, reason, load_id, loaded_at, load_seq) "
                "values (%s, %s, %s, %s, %s, 'loaded', null, %s, %s, %s)"
            ),
            (obj.key, obj.etag, obj.size, target, rows, load_id, loaded_at, load_seq),
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
                    f"and {CURRENT_VERSION}"
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
                    reason[:REASON_CHARS],
                    load_id,
                    loaded_at,
                    self._next_load_seq(cur),
                ),
            )
        return current
