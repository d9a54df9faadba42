"""Publishing: what readers (the dashboard, BI tools, analysts, Airflow Assets) see, and when.

Write, audit, publish. dbt builds the KPI marts (models tagged ``kpi``) into the internal
schema ``kpi_build``; only after the whole build passed its tests does :func:`publish_marts`
make them readable under the names readers use, ``marts.<name>``, together with the served
aggregates ``served.daily_listeners`` and ``served.rejected_rows_by_file``. One mechanism on
every warehouse: each published relation is brought to its audited content by difference on
its grain (the keys whose rows differ are deleted and inserted again), so a publish writes
about what changed, and all of them switch at once:

- PostgreSQL and Redshift: in the warehouse itself, in one transaction, which also marks the
  build published (``raw_meta.dbt_builds.published_at``). Readers (MVCC) see the previous
  publish or the next one, never a mix, never a failed build's numbers.
- DuckDB: a DuckDB file has one writer, and a reader would block the pipeline, so readers read
  ``<workdir>/serving.duckdb``. A publish copies the current one to a temporary file, brings it
  up to date there, and moves it over with ``os.replace``; then it marks the build published.

A publish that dies (kill -9, a full disk) leaves the build unpublished: the next run, even one
with nothing new, publishes it (:func:`publish_pending`) and removes leftover temporary files.
A failed publish is :class:`PublishFailed`, an outage, never "fix the data".

Read side: :func:`open_reader` returns a :class:`KpiReader` for either case. Every relation a
reader may name is listed in :data:`SERVED`; SQL text is never built from data.

``python -m loaders.serving [--workdir W] [--if-stale]`` publishes by hand (``make dashboard``
runs it with ``--if-stale``), under the run lock.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loaders.config import ConfigError, Settings, check_identifier
from loaders.errors import ServiceOutage, is_interrupt
from loaders.manifest import Mart
from loaders.warehouse import BUILDS_TABLE, LEDGER_TABLE, Warehouse, open_warehouse

SERVING_FILE = "serving.duckdb"
PUBLISHED_SCHEMA = "marts"
PUBLISHED_TABLE = "served.published"
_SCRATCH = "_publish"


@dataclass(frozen=True)
class ServedRelation:
    """A relation readers may query: its name where readers read it, its content over the
    warehouse, and its grain (the columns that identify a row). A relation without a grain is
    a loader table: read in place on PostgreSQL and Redshift, copied whole into the DuckDB
    serving copy."""

    name: str  # schema.table
    query: str
    grain: tuple[str, ...] = ()

    @property
    def alias(self) -> str:
        return self.name.rsplit(".", 1)[-1]


# The KPI marts readers name (their content and grain come from the dbt manifest at publish time)
KPI_MARTS = ("fct_genre_kpis_daily", "fct_listening_kpis_hourly", "fct_top_artists_hourly")
# What a publish writes besides the KPI marts
AGGREGATES_AND_TABLES: tuple[ServedRelation, ...] = (
    # A day's listeners are not the sum of its genres' listeners (one user plays many genres):
    # they are counted here from the plays themselves.
    ServedRelation(
        "served.daily_listeners",
        "select listen_date, count(*) as listen_count, "
        "count(distinct user_id) as unique_listeners "
        "from marts.fct_listens group by listen_date",
        ("listen_date",),
    ),
    ServedRelation(
        "served.rejected_rows_by_file",
        "select source_file, reject_reason, count(*) as rejected_rows, "
        "max(loaded_at) as loaded_at "
        "from marts.fct_rejected_listens group by source_file, reject_reason",
        ("source_file", "reject_reason"),
    ),
    # Whole tables (small: one row per landed object, one per green build), every column
    # whatever the loader's version adds, e.g. a superseded marker.
    ServedRelation(LEDGER_TABLE, f"select * from {LEDGER_TABLE}"),
    ServedRelation(BUILDS_TABLE, f"select * from {BUILDS_TABLE}"),
)
# Every relation a reader may name
SERVED = frozenset(
    {f"{PUBLISHED_SCHEMA}.{name}" for name in KPI_MARTS}
    | {relation.name for relation in AGGREGATES_AND_TABLES}
)


def published_relations(marts: Sequence[Mart]) -> tuple[ServedRelation, ...]:
    """What a publish writes: every KPI mart of the manifest from the relation dbt built it in
    (its grain from the model's ``meta.grain``), then the served aggregates and tables."""
    kpis = tuple(
        ServedRelation(
            f"{PUBLISHED_SCHEMA}.{check_identifier(mart.name, 'KPI mart')}",
            f"select * from {mart.relation}",
            tuple(check_identifier(c, "grain column") for c in mart.meta.get("grain", ())),
        )
        for mart in marts
    )
    for relation in kpis:
        if not relation.grain:
            raise ConfigError(f"the KPI mart {relation.alias} has no meta.grain in its config")
    return kpis + AGGREGATES_AND_TABLES


def serving_path(settings: Settings) -> Path:
    """Where the DuckDB serving copy lives: beside the work directory's other state."""
    return settings.workdir / SERVING_FILE


class NoKpiData(RuntimeError):
    """Nothing to read yet: no green build published."""


class PublishFailed(ServiceOutage):
    """Publishing failed (a full disk, the warehouse): the build stays recorded, readers keep
    the previous publish, and the next run publishes again."""


def publish_pending(settings: Settings, wh: Warehouse) -> bool:
    """Whether a green build is recorded that readers do not see yet."""
    (unpublished, builds) = wh.query(
        f"select count(case when published_at is null then 1 end), count(*) from {BUILDS_TABLE}"
    )[0]
    if int(unpublished):
        return True
    return (
        settings.warehouse.kind == "duckdb"
        and bool(builds)
        and not serving_path(settings).is_file()
    )


def publish_marts(settings: Settings, marts: Sequence[Mart]) -> str:
    """Publish the last green build (see the module docstring); returns what it did in words.
    Call it under the run lock, after a green build."""
    relations = published_relations(marts)
    try:
        if settings.warehouse.kind == "duckdb":
            changed = _publish_duckdb(settings, relations)
            where = str(serving_path(settings))
        else:
            changed = _publish_in_place(settings, relations)
            where = f"the {settings.warehouse.kind} warehouse"
    except Exception as exc:
        if is_interrupt(exc) or isinstance(exc, ConfigError):
            raise
        raise PublishFailed(
            f"publishing the marts failed: {_one_line(exc)} (the build is recorded; readers keep "
            "the previous publish; the next run publishes it)"
        ) from None
    return f"{changed:,} row(s) changed in {len(relations)} relation(s), in {where}"


def _publish_in_place(settings: Settings, relations: Sequence[ServedRelation]) -> int:
    """PostgreSQL, Redshift: one transaction brings every published relation to its audited
    content and marks the builds published."""
    with open_warehouse(settings) as wh, wh.transaction() as cur:
        cur.execute(f"lock {BUILDS_TABLE}")  # one publish at a time, whatever holds the run lock
        changed = sum(
            _sync(_Target(cur, "", "temp", "%s"), relation)
            for relation in relations
            if relation.grain
        )
        cur.execute(
            f"update {BUILDS_TABLE} set published_at = current_timestamp where published_at is null"
        )
    return changed


def _publish_duckdb(settings: Settings, relations: Sequence[ServedRelation]) -> int:
    """DuckDB: bring a copy of the serving file up to date, move it over the old one, then mark
    the builds published in the warehouse."""
    import duckdb

    target = serving_path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in target.parent.glob(f".{target.name}.*.tmp*"):  # of a publish that died
        leftover.unlink(missing_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        if target.is_file():
            shutil.copyfile(target, tmp)  # what readers see now: the publish writes the difference
        with open_warehouse(settings) as wh:
            conn = wh.conn
            try:
                conn.execute(f"attach '{_sql_literal(str(tmp))}' as serving_copy")
            except duckdb.Error:  # an unreadable old copy: start from an empty one
                tmp.unlink(missing_ok=True)
                conn.execute(f"attach '{_sql_literal(str(tmp))}' as serving_copy")
            try:
                with wh.transaction() as cur:
                    out = _Target(cur, "serving_copy.", "", "?", scratch="serving_copy.main.")
                    changed = 0
                    for relation in relations:
                        if relation.grain:
                            changed += _sync(out, relation)
                        else:
                            _replace(out, relation.name, relation.query)
                    _replace(
                        out,
                        PUBLISHED_TABLE,
                        "select cast(? as timestamp) as published_at, "
                        f"(select max(finished_at) from {BUILDS_TABLE}) as build_finished_at",
                        (_utcnow(),),
                    )
                conn.execute("checkpoint serving_copy")
            finally:
                conn.execute("detach serving_copy")
            os.replace(tmp, target)
            with wh.transaction() as cur:
                cur.execute(
                    f"update {BUILDS_TABLE} set published_at = ? where published_at is null",
                    (_utcnow(),),
                )
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return changed


@dataclass(frozen=True)
class _Target:
    """Where a publish writes: a cursor, the catalog prefix of the published relations, how
    scratch tables are made and named, and the driver's placeholder."""

    cur: Any
    catalog: str  # "" or "serving_copy."
    temp: str  # "temp" (a temporary table) or ""
    placeholder: str
    scratch: str = ""  # prefix of scratch tables

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.cur.execute(sql.replace("%s", self.placeholder), tuple(params))
        return self.cur

    def columns(self, relation: str) -> list[str]:
        """Column names of ``relation`` (catalog-qualified), empty when it does not exist."""
        schema, table = relation.split(".")
        sql = (
            "select column_name from information_schema.columns "
            "where table_schema = %s and table_name = %s"
        )
        params = [schema, table]
        if self.catalog:
            sql += " and table_catalog = %s"
            params.append(self.catalog.rstrip("."))
        return [
            row[0] for row in self.execute(sql + " order by ordinal_position", params).fetchall()
        ]

    def ensure_schema(self, schema: str) -> None:
        sql = "select count(*) from information_schema.schemata where schema_name = %s"
        params = [schema]
        if self.catalog:
            sql += " and catalog_name = %s"
            params.append(self.catalog.rstrip("."))
        if not int(self.execute(sql, params).fetchone()[0]):
            self.execute(f"create schema {self.catalog}{schema}")


def _replace(out: _Target, name: str, query: str, params: Sequence[Any] = ()) -> None:
    out.ensure_schema(name.split(".")[0])
    out.execute(f"drop table if exists {out.catalog}{name}")
    out.execute(f"create table {out.catalog}{name} as {query}", params)


def _sync(out: _Target, relation: ServedRelation) -> int:
    """Bring ``relation`` to the content of its query by difference on its grain; returns the
    number of grain keys whose rows changed (all rows when it was created or its columns
    changed)."""
    published = f"{out.catalog}{relation.name}"
    new, changed = f"{out.scratch}{_SCRATCH}_new", f"{out.scratch}{_SCRATCH}_changed"
    for scratch in (new, changed):
        out.execute(f"drop table if exists {scratch}")
    out.execute(f"create {out.temp} table {new} as {relation.query}")
    wanted = [d[0] for d in out.execute(f"select * from {new} limit 0").description]
    if out.columns(relation.name) != wanted:  # new, or its columns changed: write it whole
        _replace(out, relation.name, f"select * from {new}")
        count = int(out.execute(f"select count(*) from {new}").fetchone()[0])
    else:
        keys = ", ".join(relation.grain)
        renamed = ", ".join(f"{c} as _key_{c}" for c in relation.grain)
        out.execute(
            f"create {out.temp} table {changed} as select {renamed} from ("
            f"select {keys} from (select * from {published} except select * from {new}) as gone"
            f" union select {keys} from (select * from {new} except select * from {published})"
            " as came) as keys"
        )
        # the changed keys carry other names, so each unqualified grain column below is the
        # published (or new) table's: no alias needed, which DELETE lacks on Redshift
        matches = " and ".join(f"changed_keys._key_{c} = {c}" for c in relation.grain)
        out.execute(
            f"delete from {published} where exists "
            f"(select 1 from {changed} as changed_keys where {matches})"
        )
        out.execute(
            f"insert into {published} select * from {new} where exists "
            f"(select 1 from {changed} as changed_keys where {matches})"
        )
        count = int(out.execute(f"select count(*) from {changed}").fetchone()[0])
        out.execute(f"drop table {changed}")
    out.execute(f"drop table {new}")
    return count


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
        if name not in SERVED:
            raise KeyError(name)  # only served relations can be named
        return name

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
    """``python -m loaders.serving``: publish the last green build of a work directory's
    warehouse, under the run lock (not while a run holds it)."""
    from loaders import pipeline
    from loaders.runlock import run_lock

    parser = argparse.ArgumentParser(
        prog="python -m loaders.serving",
        description="Publish the marts readers see (DuckDB: <workdir>/serving.duckdb).",
    )
    parser.add_argument("--workdir", help="work directory (default: $MUSIC_ELT_WORKDIR)")
    parser.add_argument(
        "--if-stale",
        action="store_true",
        help="only when a green build is not published yet (or the DuckDB copy is missing)",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(workdir=Path(args.workdir) if args.workdir else None)
        if settings.warehouse.kind == "duckdb" and not settings.warehouse.duckdb_path.is_file():
            print(f"serving: no warehouse at {settings.warehouse.duckdb_path} yet")
            return 0
        with run_lock(settings, "python -m loaders.serving", wait_seconds=0):
            with pipeline.warehouse(settings) as wh:
                (builds,) = wh.query(f"select count(*) from {BUILDS_TABLE}")[0]
                stale = publish_pending(settings, wh)
            if not builds:
                print("serving: nothing to publish yet (no green build)")
                return 0
            if args.if_stale and not stale:
                print("serving: the last green build is published")
                return 0
            pipeline.publish(settings, progress=lambda line: print(f"serving:{line}"))
    except ConnectionError as exc:  # RunLocked, PublishFailed, an unreachable warehouse
        print(f"serving: not published now ({exc}); readers see the last publish")
        return 0
    except ConfigError as exc:
        print(f"serving: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
