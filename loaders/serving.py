"""What readers (the KPI dashboard) see: a published copy of the marts on DuckDB, the warehouse
itself on PostgreSQL and Redshift.

A DuckDB file has one writer process, and a reader fails ("Conflicting lock is held") while a
pipeline run writes it; a reader holding the file open would in turn block the next run. So on
DuckDB readers never open the warehouse. After each green dbt build the pipeline calls
:func:`publish_serving_copy`, which writes the relations below into a new file beside the
warehouse and moves it over ``<workdir>/serving.duckdb`` with ``os.replace``: a reader sees the
previous complete copy or the next one, never a half-written one, and holds no lock on the
warehouse. PostgreSQL and Redshift give readers a consistent snapshot themselves (MVCC), so
there readers query the warehouse directly, through the same relation names.

Read side: :func:`open_reader` returns a :class:`KpiReader` for either case. Every relation a
reader may name is listed in :data:`SERVED`; SQL text is never built from data.

``python -m loaders.serving [--workdir W] [--if-stale]`` publishes by hand (``make dashboard``
runs it with ``--if-stale`` so a warehouse built before the pipeline published gets a copy).
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loaders.config import ConfigError, Settings
from loaders.warehouse import BUILDS_TABLE, LEDGER_TABLE, open_warehouse

SERVING_FILE = "serving.duckdb"
PUBLISHED_TABLE = "served.published"


@dataclass(frozen=True)
class ServedRelation:
    """A relation readers may query: its name in the serving copy and its definition over the
    warehouse (the copy holds the result of ``query``; a direct reader uses ``query`` inline)."""

    name: str  # schema.table
    query: str

    @property
    def alias(self) -> str:
        return self.name.rsplit(".", 1)[-1]


SERVED: tuple[ServedRelation, ...] = (
    ServedRelation("marts.fct_genre_kpis_daily", "select * from marts.fct_genre_kpis_daily"),
    ServedRelation(
        "marts.fct_listening_kpis_hourly", "select * from marts.fct_listening_kpis_hourly"
    ),
    ServedRelation("marts.fct_top_artists_hourly", "select * from marts.fct_top_artists_hourly"),
    # A day's listeners are not the sum of its genres' listeners (one user plays many genres):
    # they are counted here from the plays themselves.
    ServedRelation(
        "served.daily_listeners",
        "select listen_date, count(*) as listen_count, "
        "count(distinct user_id) as unique_listeners "
        "from marts.fct_listens group by listen_date",
    ),
    ServedRelation(
        "served.rejected_rows_by_file",
        "select source_file, reject_reason, count(*) as rejected_rows, "
        "max(loaded_at) as loaded_at "
        "from marts.fct_rejected_listens group by source_file, reject_reason",
    ),
    # Whole tables (small: one row per landed object, one per green build), every column
    # whatever the loader's version adds, e.g. a superseded marker.
    ServedRelation(LEDGER_TABLE, f"select * from {LEDGER_TABLE}"),
    ServedRelation(BUILDS_TABLE, f"select * from {BUILDS_TABLE}"),
)
_BY_NAME = {relation.name: relation for relation in SERVED}


def serving_path(settings: Settings) -> Path:
    """Where the DuckDB serving copy lives: beside the work directory's other state."""
    return settings.workdir / SERVING_FILE


class NoKpiData(RuntimeError):
    """Nothing to read yet: no green build published (DuckDB) or no marts (PostgreSQL)."""


def publish_serving_copy(settings: Settings) -> Path | None:
    """Publish the relations in :data:`SERVED` for readers; call it after a green dbt build.

    On DuckDB: copy them from the warehouse into ``<workdir>/serving.duckdb`` (a temporary file
    first, then an atomic ``os.replace``) and return its path. This opens the warehouse like
    any pipeline step, so call it from the process that ran the build, not beside a running
    one. On PostgreSQL and Redshift readers query the warehouse directly: return None.
    """
    if settings.warehouse.kind != "duckdb":
        return None
    import duckdb

    target = serving_path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open_warehouse(settings) as wh:
            conn = wh.conn
            conn.execute(f"attach '{_sql_literal(str(tmp))}' as serving_copy")
            try:
                _copy_served(conn)
                conn.execute("checkpoint serving_copy")
            except duckdb.CatalogException as exc:
                raise NoKpiData(f"the marts are not built yet: {_one_line(exc)}") from None
            finally:
                conn.execute("detach serving_copy")
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            with suppress(FileNotFoundError):
                leftover.unlink()
    return target


def _copy_served(conn: Any) -> None:
    """In one transaction, which reads one state of the warehouse: every served relation into
    the attached ``serving_copy``, then the marker saying which build it shows."""
    conn.execute("begin transaction")
    try:
        for schema in sorted({r.name.split(".")[0] for r in SERVED} | {"served"}):
            conn.execute(f"create schema serving_copy.{schema}")
        for relation in SERVED:
            conn.execute(f"create table serving_copy.{relation.name} as {relation.query}")
        conn.execute(
            f"create table serving_copy.{PUBLISHED_TABLE} as select "
            "cast(? as timestamp) as published_at, "
            f"(select max(finished_at) from {BUILDS_TABLE}) as build_finished_at",
            [_utcnow()],
        )
    except BaseException:
        conn.execute("rollback")
        raise
    conn.execute("commit")


def serving_copy_stale(settings: Settings) -> bool:
    """True when the DuckDB serving copy is missing or older than the warehouse's last green
    build (reads the warehouse, so it fails like any reader while a run writes it)."""
    with open_warehouse(settings) as wh:
        (last_build,) = wh.query(f"select max(finished_at) from {BUILDS_TABLE}")[0]
    if last_build is None:
        return False  # no green build yet: nothing to publish
    try:
        (published_build,) = open_reader(settings).query(
            f"select build_finished_at from {PUBLISHED_TABLE}"
        )[0]
    except (NoKpiData, ConnectionError):
        return True
    return bool(published_build is None or published_build < last_build)


class KpiSession:
    """One connection's worth of read-only queries: one consistent view of what is served.

    On DuckDB it holds the serving copy open read-only (a replaced copy stays readable until
    the session ends); on PostgreSQL it runs in one read-only REPEATABLE READ transaction, on
    Redshift in one transaction (serializable there). Placeholders are ``%s``.
    """

    def __init__(self, reader: KpiReader, cursor: Any) -> None:
        self.reader = reader
        self._cursor = cursor

    def relation(self, name: str) -> str:
        return self.reader.relation(name)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query."""
        return self.query_with_columns(sql, params)[1]

    def query_with_columns(
        self, sql: str, params: Sequence[Any] = ()
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows of a read-only query."""
        cur = self._cursor
        cur.execute(sql.replace("%s", "?") if self.reader.path else sql, tuple(params))
        columns = [d[0] for d in cur.description]
        return columns, [tuple(row) for row in cur.fetchall()]


class KpiReader:
    """Opens read-only sessions over :data:`SERVED`: on the serving copy (DuckDB) or on the
    warehouse (PostgreSQL, Redshift). Open one session per page load and close it: a serving
    copy replaced meanwhile is picked up by the next session."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kind = settings.warehouse.kind
        self.path = serving_path(settings) if self.kind == "duckdb" else None

    @property
    def where(self) -> str:
        """A printable description of what this reader reads (no secret in it)."""
        if self.path is not None:
            return f"the DuckDB serving copy {self.path}"
        w = self.settings.warehouse
        return f"the {w.kind} warehouse {w.user}@{w.host}:{w.port}/{w.dbname}"

    def relation(self, name: str) -> str:
        """SQL naming a served relation in a FROM clause."""
        relation = _BY_NAME[name]  # KeyError for a relation that is not served
        if self.path is not None:
            return relation.name
        return f"({relation.query}) as {relation.alias}"

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read-only query in a session of its own."""
        with self.session() as session:
            return session.query(sql, params)

    @contextmanager
    def session(self) -> Iterator[KpiSession]:
        """A read-only session; NoKpiData when nothing is published or built yet,
        ConnectionError when the warehouse cannot be reached."""
        if self.path is not None:
            with self._duckdb_session(self.path) as session:
                yield session
        else:
            with self._postgres_session() as session:
                yield session

    @contextmanager
    def _duckdb_session(self, path: Path) -> Iterator[KpiSession]:
        import duckdb

        if not path.is_file():
            raise NoKpiData(f"no serving copy at {path}")
        try:
            conn = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as exc:
            raise ConnectionError(f"cannot open {path}: {_one_line(exc)}") from None
        try:
            yield KpiSession(self, conn)
        except duckdb.CatalogException as exc:
            raise NoKpiData(f"{path} lacks a served relation: {_one_line(exc)}") from None
        finally:
            conn.close()

    @contextmanager
    def _postgres_session(self) -> Iterator[KpiSession]:
        import psycopg2
        import psycopg2.errors

        w = self.settings.warehouse
        try:
            conn = psycopg2.connect(
                host=w.host,
                port=w.port,
                user=w.user,
                password=w.password,
                dbname=w.dbname,
                connect_timeout=15,
            )
        except psycopg2.OperationalError as exc:
            raise ConnectionError(f"cannot reach {self.where}: {_one_line(exc)}") from None
        try:
            if self.kind == "postgres":
                conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with conn.cursor() as cur:
                yield KpiSession(self, cur)
        except psycopg2.errors.UndefinedTable as exc:
            raise NoKpiData(f"the marts are not built yet: {_one_line(exc)}") from None
        finally:
            conn.rollback()
            conn.close()


def open_reader(settings: Settings) -> KpiReader:
    """A reader over what these settings publish (see the module docstring)."""
    return KpiReader(settings)


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _sql_literal(text: str) -> str:
    return text.replace("'", "''")


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(lines[:2])[:300] if lines else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m loaders.serving``: publish the serving copy of a work directory."""
    parser = argparse.ArgumentParser(
        prog="python -m loaders.serving",
        description="Publish the marts the dashboard reads (DuckDB: <workdir>/serving.duckdb).",
    )
    parser.add_argument("--workdir", help="work directory (default: $MUSIC_ELT_WORKDIR)")
    parser.add_argument(
        "--if-stale",
        action="store_true",
        help="only when the copy is missing or older than the last green build",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(workdir=Path(args.workdir) if args.workdir else None)
        if settings.warehouse.kind != "duckdb":
            print(f"serving: the dashboard reads the {settings.warehouse.kind} warehouse directly")
            return 0
        if not settings.warehouse.duckdb_path.is_file():
            print(f"serving: no warehouse at {settings.warehouse.duckdb_path} yet")
            return 0
        if args.if_stale and not serving_copy_stale(settings):
            print(f"serving: {serving_path(settings)} is up to date (or nothing is built yet)")
            return 0
        path = publish_serving_copy(settings)
    except NoKpiData as exc:
        print(f"serving: nothing to publish yet ({exc})")
        return 0
    except ConnectionError as exc:
        print(f"serving: not published now ({exc}); the dashboard shows the last copy")
        return 0
    except ConfigError as exc:
        print(f"serving: error: {exc}", file=sys.stderr)
        return 2
    print(f"serving: published {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
