"""Publishing: what readers (the dashboard, BI tools, analysts, Airflow Assets) see, and when.

Write, audit, publish. dbt builds the KPI marts (models tagged ``kpi``) into the internal
schema ``kpi_build``; only after the whole build passed its tests does :func:`publish_marts`
make them readable under the names readers use, ``marts.<name>``, together with the served
aggregates ``served.daily_listeners`` and ``served.rejected_rows_by_file`` (dbt models built
with them) and, on DuckDB, copies of the pipeline's dbt views (``marts.landed_files``,
``marts.pipeline_runs``, ``marts.pipeline_freshness``; read in place elsewhere). One mechanism on
every warehouse: each published relation is brought to its audited content by difference on
its grain (the keys whose rows differ are deleted and inserted again), so a publish writes
about what changed, and all of them switch at once:

- PostgreSQL and Redshift: in the warehouse itself, in one transaction, which also marks the
  build published (``raw_meta.dbt_builds.published_at``). Readers (MVCC) see the previous
  publish or the next one, never a mix, never a failed build's numbers.
- DuckDB: a DuckDB file has one writer, and a reader would block the pipeline, so readers read
  ``<workdir>/serving.duckdb``. A publish copies the current one to a temporary file, brings it
  up to date there, and moves it over with ``os.replace``; then it marks the build published.

Each publish also records what it changed in what readers saw before: for the KPI marts, every
value of a changed grain key that differs (floats beyond a relative 1e-9) goes to the revision
log with the file versions loaded or superseded since the previous publish, except in a period
(the grain's first column: a date, an hour) published for the first time. The log is written
in the same transaction as the marts (on DuckDB inside the serving copy, as
``marts.kpi_revisions``, then appended to the warehouse's ``raw_meta.kpi_revisions``, which the
dbt view ``marts.kpi_revisions`` reads on every warehouse). With ``MUSIC_ELT_READER_ROLE``
set, the publish grants that role USAGE on the published schemas and SELECT on the published
relations (PostgreSQL, Redshift).

A publish that dies (kill -9, a full disk) leaves the build unpublished: the next run, even one
with nothing new, publishes it (:func:`publish_pending`) and removes leftover temporary files.
So it does when the DuckDB serving copy is missing or of an older format (a published relation
missing, or with other columns than the warehouse gives it).
A failed publish is :class:`PublishFailed`, an outage, never "fix the data".

Read side: :func:`open_reader` returns a :class:`KpiReader` for either case. Every relation a
reader may name is listed in :data:`SERVED`; SQL text is never built from data.

``python -m loaders.serving [--workdir W] [--if-stale]`` publishes by hand (``make dashboard``
runs it with ``--if-stale``), under the run lock.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loaders import manifest
from loaders.config import ConfigError, Settings, check_identifier
from loaders.errors import (
    NoKpiData,
    PublishFailed,
    ServiceOutage,
    is_interrupt,
    one_line,
)
from loaders.manifest import Mart
from loaders.warehouse import (
    BUILDS_TABLE,
    LAST_GREEN_BUILD,
    LEDGER_TABLE,
    Warehouse,
    open_warehouse,
)

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
# dbt models built with the KPI marts in kpi_build and published with them under another name
# (the model's meta.published_as), by difference on their grain (meta.grain)
AGGREGATES = ("daily_listeners", "rejected_rows_by_file")
# dbt views of the pipeline's own state (the ledger, the builds, the revision log): read in
# place on PostgreSQL and Redshift, copied whole into the DuckDB serving copy
PIPELINE_VIEWS = ("landed_files", "pipeline_runs", "pipeline_freshness")
# The revision log: appended to by each publish (see :func:`_record_revisions`); readers read
# the dbt view marts.kpi_revisions over it (on DuckDB the serving copy holds the log under
# that name itself)
REVISIONS = f"{PUBLISHED_SCHEMA}.kpi_revisions"
REVISION_LOG = "raw_meta.kpi_revisions"
# When the value now published under each grain key of a KPI mart was published
PUBLISHED_ROWS = "raw_meta.kpi_published_rows"
REVISION_COLUMNS = (
    "mart",
    "grain",
    "kpi",
    "old_value",
    "new_value",
    "old_published_at",
    "new_published_at",
    "caused_by",
)
# A float value changed when its relative difference exceeds this (the contract's tolerance)
FLOAT_TOLERANCE = 1e-9
_FLOAT_TYPES = frozenset({"double", "double precision", "float", "float4", "float8", "real"})
# Every relation a reader may name
SERVED = frozenset(
    {f"{PUBLISHED_SCHEMA}.{name}" for name in (*KPI_MARTS, *PIPELINE_VIEWS)}
    | {f"served.{name}" for name in AGGREGATES}
    | {REVISIONS, "served.published"}
)


def published_relations(
    marts: Sequence[Mart], models: Sequence[Mart] = ()
) -> tuple[ServedRelation, ...]:
    """What a publish writes: every KPI mart of the manifest from the relation dbt built it in
    (its grain from the model's ``meta.grain``), then the aggregates of :data:`AGGREGATES` and
    the views of :data:`PIPELINE_VIEWS` found among ``models`` (the manifest's models)."""
    kpis = tuple(
        ServedRelation(
            f"{PUBLISHED_SCHEMA}.{check_identifier(mart.name, 'KPI mart')}",
            f"select * from {mart.relation}",
            tuple(check_identifier(c, "grain column") for c in mart.meta.get("grain", ())),
        )
        for mart in marts
    )
    by_name = {model.name: model for model in models}
    aggregates = tuple(
        ServedRelation(
            f"served.{check_identifier(by_name[name].name, 'served model')}",
            f"select * from {by_name[name].relation}",
            tuple(check_identifier(c, "grain column") for c in by_name[name].meta.get("grain", ())),
        )
        for name in AGGREGATES
        if name in by_name
    )
    views = tuple(
        ServedRelation(
            f"{PUBLISHED_SCHEMA}.{check_identifier(name, 'pipeline view')}",
            f"select * from {by_name[name].relation}",
        )
        for name in PIPELINE_VIEWS
        if name in by_name
    )
    for relation in kpis + aggregates:
        if not relation.grain:
            raise ConfigError(
                f"the published model {relation.alias} has no meta.grain in its config"
            )
    return kpis + aggregates + views


def kpi_marts(settings: Settings) -> tuple[Mart, ...]:
    """The KPI marts, from the dbt manifest (models tagged ``kpi``)."""
    return manifest.kpi_marts(manifest.load_manifest(settings.dbt_manifest_path))


def served_models(settings: Settings) -> list[Mart]:
    """The models of :data:`AGGREGATES` and :data:`PIPELINE_VIEWS`, from the dbt manifest."""
    data = manifest.load_manifest(settings.dbt_manifest_path)
    names = (*AGGREGATES, *PIPELINE_VIEWS)
    return [model for name in names if (model := manifest.model(data, name)) is not None]


def serving_path(settings: Settings) -> Path:
    """Where the DuckDB serving copy lives: beside the work directory's other state."""
    return settings.workdir / SERVING_FILE


def publish_pending(settings: Settings, wh: Warehouse) -> bool:
    """Whether a green build is recorded that readers do not see yet: one not published, or
    (DuckDB) a serving copy that is missing or of an older format (:func:`_copy_outdated`)."""
    (unpublished, builds) = wh.query(
        f"select count(case when published_at is null then 1 end), count(*) from {BUILDS_TABLE}"
    )[0]
    if int(unpublished):
        return True
    if settings.warehouse.kind != "duckdb" or not builds:
        return False
    return not serving_path(settings).is_file() or _copy_outdated(settings, wh)


def _copy_outdated(settings: Settings, wh: Warehouse) -> bool:
    """DuckDB: whether the serving copy lacks a relation a publish writes, or holds it with
    other columns than the warehouse now gives it (a copy an older version published, e.g.
    before ``landed_files.is_current``): a publish rewrites those. Without a manifest, or for
    a relation the warehouse lacks, a publish could do no better: not outdated then; an
    unreadable copy is."""
    import duckdb

    if not settings.dbt_manifest_path.is_file():
        return False
    relations = published_relations(kpi_marts(settings), served_models(settings))
    conn = wh.conn
    try:
        conn.execute(
            f"attach '{_sql_literal(str(serving_path(settings)))}' as serving_now (read_only)"
        )
    except duckdb.Error:  # unreadable: a publish starts from an empty copy
        return True
    try:
        return any(
            (wanted := _column_names(conn, relation.query)) is not None
            and _column_names(conn, f"select * from serving_now.{relation.name}") != wanted
            for relation in relations
        )
    finally:
        conn.execute("detach serving_now")


def _column_names(conn: Any, query: str) -> list[str] | None:
    """The columns ``query`` returns on a DuckDB connection; None when it cannot run."""
    import duckdb

    try:
        return [d[0] for d in conn.execute(f"select * from ({query}) limit 0").description]
    except duckdb.Error:
        return None


def publish_marts(settings: Settings, marts: Sequence[Mart]) -> str:
    """Publish the last green build (see the module docstring); returns what it did in words.
    Call it under the run lock, after a green build."""
    relations = published_relations(marts, served_models(settings))
    try:
        if settings.warehouse.kind == "duckdb":
            changed, revised = _publish_duckdb(settings, relations)
            where = str(serving_path(settings))
        else:
            changed, revised = _publish_in_place(settings, relations)
            where = f"the {settings.warehouse.kind} warehouse"
    except Exception as exc:
        if is_interrupt(exc) or isinstance(exc, ConfigError):
            raise
        raise PublishFailed(
            f"publishing the marts failed: {one_line(exc)} (the build is recorded; readers keep "
            "the previous publish; the next run publishes it)"
        ) from None
    return (
        f"{changed:,} row(s) changed in {len(relations)} relation(s), in {where}; "
        f"{revised:,} published value(s) revised"
    )


def publish(settings: Settings, *, progress: Callable[[str], None] = print) -> dict[str, int]:
    """The pipeline's publish step: publish the last green build for readers
    (:func:`publish_marts`) and return the rows in each KPI mart, by mart name (what the DAG
    attaches to its Airflow Assets and the CLI prints). A failure is :class:`PublishFailed`,
    an outage: the build stays recorded and the next run publishes it."""
    marts = kpi_marts(settings)
    outcome = publish_marts(settings, marts)
    progress(f"  published for readers: {outcome}")
    with open_warehouse(settings) as wh:
        counts = wh.row_counts([mart.relation for mart in marts])
    return {mart.name: counts[mart.relation] for mart in marts}


@dataclass(frozen=True)
class _Revisions:
    """What one publish records in the revision log: its time, the previous publish's time (the
    fallback for when an old value was published) and the file versions loaded or superseded
    since the previous publish (a JSON array of keys)."""

    log: str  # the log's relation, catalog-qualified
    rows: str  # PUBLISHED_ROWS, catalog-qualified
    at: datetime
    previous_at: datetime | None
    caused_by: str


def _revisions(out: _Target, log: str, at: datetime) -> _Revisions:
    """The revision context of a publish at ``at``, read from the builds and the ledger (the
    builds not published yet are the ones this publish publishes)."""
    previous_seq, previous_at, current_seq = out.execute(
        "select coalesce(max(case when published_at is not null then load_seq end), 0), "
        f"max(published_at), (select load_seq from {LAST_GREEN_BUILD}) from {BUILDS_TABLE}"
    ).fetchone()
    keys = out.execute(
        f"select distinct object_key from {LEDGER_TABLE} where status = 'loaded' and ("
        "(load_seq > %s and load_seq <= %s) or (superseded_seq > %s and superseded_seq <= %s))",
        (previous_seq, current_seq, previous_seq, current_seq),
    ).fetchall()
    caused_by = json.dumps(sorted(key for (key,) in keys), ensure_ascii=False)
    return _Revisions(
        f"{out.catalog}{log}", f"{out.catalog}{PUBLISHED_ROWS}", at, previous_at, caused_by
    )


def _ensure_revision_tables(out: _Target, log: str, *, rows: bool = True) -> None:
    """Create the revision log ``log`` and (with ``rows``) :data:`PUBLISHED_ROWS` if missing."""
    text = out.text_type
    tables = (
        (
            log,
            f"mart {text}, grain {text}, kpi {text}, old_value {text}, new_value {text}, "
            f"old_published_at timestamp, new_published_at timestamp, caused_by {text}",
        ),
        (PUBLISHED_ROWS, f"mart {text}, grain {text}, period {text}, published_at timestamp"),
    )
    for name, columns in tables[: 2 if rows else 1]:
        out.ensure_schema(name.split(".")[0])
        out.execute(f"create table if not exists {out.catalog}{name} ({columns})")


def _publish_in_place(settings: Settings, relations: Sequence[ServedRelation]) -> tuple[int, int]:
    """PostgreSQL, Redshift: one transaction brings every published relation to its audited
    content, records the revisions, grants the reader role and marks the builds published."""
    at = _utcnow()
    text_type = "varchar(65535)" if settings.warehouse.kind == "redshift" else "varchar"
    with open_warehouse(settings) as wh, wh.transaction() as cur:
        cur.execute(f"lock {BUILDS_TABLE}")  # one publish at a time, whatever holds the run lock
        out = _Target(cur, "", "temp", "%s", text_type=text_type)
        _ensure_revision_tables(out, REVISION_LOG)
        revisions = _revisions(out, REVISION_LOG, at)
        changed = revised = 0
        for relation in relations:
            if relation.grain:
                rows, values = _sync(out, relation, revisions if _revised(relation) else None)
                changed, revised = changed + rows, revised + values
        if settings.warehouse.reader_role:
            _grant(out, settings, relations)
        out.execute(
            f"update {BUILDS_TABLE} set published_at = %s where published_at is null", (at,)
        )
    return changed, revised


def _revised(relation: ServedRelation) -> bool:
    """Whether the revision log covers this relation (the KPI marts)."""
    return relation.name in {f"{PUBLISHED_SCHEMA}.{name}" for name in KPI_MARTS}


def _grant(out: _Target, settings: Settings, relations: Sequence[ServedRelation]) -> None:
    """The reader role may use the published schemas and select the published relations,
    nothing else (the views dbt re-creates carry the same grant through their config)."""
    role = check_identifier(settings.warehouse.reader_role, "MUSIC_ELT_READER_ROLE")
    grantee = f"role {role}" if settings.warehouse.kind == "redshift" else role
    names = sorted({relation.name for relation in relations} | {REVISIONS})
    existing = [name for name in names if out.columns(name)]
    out.execute(
        f"grant usage on schema {', '.join(sorted({n.split('.')[0] for n in existing}))} "
        f"to {grantee}"
    )
    out.execute(f"grant select on {', '.join(existing)} to {grantee}")


def _publish_duckdb(settings: Settings, relations: Sequence[ServedRelation]) -> tuple[int, int]:
    """DuckDB: bring a copy of the serving file up to date (the revision log is in it, as
    marts.kpi_revisions), move it over the old one, then, in the warehouse, append the new
    revisions to its raw_meta.kpi_revisions and mark the builds published."""
    import duckdb

    target = serving_path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in target.parent.glob(f".{target.name}.*.tmp*"):  # of a publish that died
        leftover.unlink(missing_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    at = _utcnow()
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
                    _ensure_revision_tables(out, REVISIONS)
                    revisions = _revisions(out, REVISIONS, at)
                    changed = revised = 0
                    for relation in relations:
                        if relation.grain:
                            rows, values = _sync(
                                out, relation, revisions if _revised(relation) else None
                            )
                            changed, revised = changed + rows, revised + values
                        else:
                            _replace(out, relation.name, relation.query)
                    _replace(
                        out,
                        PUBLISHED_TABLE,
                        "select cast(? as timestamp) as published_at, "
                        f"(select max(finished_at) from {BUILDS_TABLE}) as build_finished_at",
                        (at,),
                    )
                conn.execute("checkpoint serving_copy")
            finally:
                conn.execute("detach serving_copy")
            os.replace(tmp, target)
            _mirror_revisions(wh, target)
            with wh.transaction() as cur:
                cur.execute(
                    f"update {BUILDS_TABLE} set published_at = ? where published_at is null", (at,)
                )
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return changed, revised


def _mirror_revisions(wh: Warehouse, serving: Path) -> None:
    """DuckDB: append to the warehouse's revision log what the serving copy's log holds beyond
    it (dbt's kpi_revisions reads the warehouse's). Also repairs a publish that died between
    replacing the copy and this step: the next publish mirrors its rows too."""
    conn = wh.conn
    conn.execute(f"attach '{_sql_literal(str(serving))}' as serving_now (read_only)")
    try:
        with wh.transaction() as cur:
            out = _Target(cur, "", "", "?")
            _ensure_revision_tables(out, REVISION_LOG, rows=False)
            columns = ", ".join(REVISION_COLUMNS)
            cur.execute(
                f"insert into {REVISION_LOG} ({columns}) select {columns} "
                f"from serving_now.{REVISIONS} where new_published_at > coalesce("
                f"(select max(new_published_at) from {REVISION_LOG}), timestamp '1900-01-01')"
            )
    finally:
        conn.execute("detach serving_now")


@dataclass(frozen=True)
class _Target:
    """Where a publish writes: a cursor, the catalog prefix of the published relations, how
    scratch tables are made and named, and the driver's placeholder."""

    cur: Any
    catalog: str  # "" or "serving_copy."
    temp: str  # "temp" (a temporary table) or ""
    placeholder: str
    scratch: str = ""  # prefix of scratch tables
    text_type: str = "varchar"  # the type of text columns the publish creates

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.cur.execute(sql.replace("%s", self.placeholder), tuple(params))
        return self.cur

    def columns(self, relation: str) -> list[str]:
        """Column names of ``relation`` (catalog-qualified), empty when it does not exist."""
        return list(self.column_types(relation))

    def column_types(self, relation: str) -> dict[str, str]:
        """Column names of ``relation`` and their types (lower case), in order."""
        schema, table = relation.split(".")
        sql = (
            "select column_name, data_type from information_schema.columns "
            "where table_schema = %s and table_name = %s"
        )
        params = [schema, table]
        if self.catalog:
            sql += " and table_catalog = %s"
            params.append(self.catalog.rstrip("."))
        return {
            row[0]: str(row[1]).lower()
            for row in self.execute(sql + " order by ordinal_position", params).fetchall()
        }

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


def _sync(
    out: _Target, relation: ServedRelation, revisions: _Revisions | None = None
) -> tuple[int, int]:
    """Bring ``relation`` to the content of its query by difference on its grain; returns the
    number of grain keys whose rows changed (all rows when it was created or its columns
    changed) and, with ``revisions``, the number of revised values it logged."""
    published = f"{out.catalog}{relation.name}"
    new, changed = f"{out.scratch}{_SCRATCH}_new", f"{out.scratch}{_SCRATCH}_changed"
    for scratch in (new, changed):
        out.execute(f"drop table if exists {scratch}")
    out.execute(f"create {out.temp} table {new} as {relation.query}")
    wanted = [d[0] for d in out.execute(f"select * from {new} limit 0").description]
    revised = 0
    if out.columns(relation.name) != wanted:  # new, or its columns changed: write it whole
        _replace(out, relation.name, f"select * from {new}")
        count = int(out.execute(f"select count(*) from {new}").fetchone()[0])
        if revisions is not None:  # a first publish (or a new contract) revises nothing
            out.execute(f"delete from {revisions.rows} where mart = %s", (relation.alias,))
            _record_published_rows(out, relation, revisions, new, None)
    else:
        keys = ", ".join(relation.grain)
        renamed = ", ".join(f"{c} as _key_{c}" for c in relation.grain)
        out.execute(
            f"create {out.temp} table {changed} as select {renamed} from ("
            f"select {keys} from (select * from {published} except select * from {new}) as gone"
            f" union select {keys} from (select * from {new} except select * from {published})"
            " as came) as keys"
        )
        if revisions is not None:
            revised = _record_revisions(out, relation, revisions, new, changed)
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
    return count, revised


def _grain_text(alias: str, grain: Sequence[str], prefix: str = "") -> str:
    """SQL for a row's key as text: its grain columns cast to text, joined by ``|``
    (``2026-01-05|rock``, ``2026-01-05 13:00:00``, ``2026-01-05 13:00:00|3``)."""
    return " || '|' || ".join(f"cast({alias}.{prefix}{c} as varchar)" for c in grain)


def _differs(old: str, new: str, is_float: bool) -> str:
    """SQL true when a value changed: nulls equal each other; floats beyond the tolerance."""
    if is_float:
        return (
            f"(case when {old} is null and {new} is null then 0 "
            f"when {old} is null or {new} is null then 1 "
            f"when abs({old} - {new}) <= {FLOAT_TOLERANCE!r} * greatest(abs({old}), abs({new})) "
            "then 0 else 1 end) = 1"
        )
    return (
        f"(case when {old} = {new} then 0 when {old} is null and {new} is null then 0 "
        "else 1 end) = 1"
    )


def _record_revisions(
    out: _Target, relation: ServedRelation, revisions: _Revisions, new: str, changed: str
) -> int:
    """Append to the log each value of a changed key that differs between what readers saw
    (the published relation) and what this publish shows (``new``), except in periods (the
    first grain column) published for the first time; then note when each changed key's
    value was published. Returns the number of revisions logged."""
    published = f"{out.catalog}{relation.name}"
    grain, period = relation.grain, relation.grain[0]
    types = out.column_types(relation.name)
    kpis = [check_identifier(c, "KPI column") for c in types if c not in grain]
    pairs = f"{out.scratch}{_SCRATCH}_pairs"
    out.execute(f"drop table if exists {pairs}")
    on_old = " and ".join(f"old_rows.{c} = changed_keys._key_{c}" for c in grain)
    on_new = " and ".join(f"new_rows.{c} = changed_keys._key_{c}" for c in grain)
    key_text = _grain_text("changed_keys", grain, "_key_")
    values = ", ".join(f"old_rows.{c} as _old_{c}, new_rows.{c} as _new_{c}" for c in kpis)
    out.execute(
        f"create {out.temp} table {pairs} as select {key_text} as grain, {values}, "
        "coalesce(rows_published.published_at, periods_published.published_at, "
        "cast(%s as timestamp)) as old_published_at "
        f"from {changed} as changed_keys "
        f"left join {published} as old_rows on {on_old} "
        f"left join {new} as new_rows on {on_new} "
        f"left join {revisions.rows} as rows_published "
        f"on rows_published.mart = %s and rows_published.grain = {key_text} "
        "left join (select period, max(published_at) as published_at "
        f"from {revisions.rows} where mart = %s group by period) as periods_published "
        f"on periods_published.period = cast(changed_keys._key_{period} as varchar) "
        f"where old_rows.{period} is not null or exists (select 1 from {published} as known "
        f"where known.{period} = changed_keys._key_{period})",
        (revisions.previous_at, relation.alias, relation.alias),
    )
    columns = ", ".join(REVISION_COLUMNS)
    selects = " union all ".join(
        f"select cast(%s as {out.text_type}) as mart, grain, "
        f"cast(%s as {out.text_type}) as kpi, "
        f"cast(_old_{c} as {out.text_type}) as old_value, "
        f"cast(_new_{c} as {out.text_type}) as new_value, old_published_at, "
        f"cast(%s as timestamp) as new_published_at, "
        f"cast(%s as {out.text_type}) as caused_by from {pairs} "
        f"where {_differs(f'_old_{c}', f'_new_{c}', types[c] in _FLOAT_TYPES)}"
        for c in kpis
    )
    params: list[Any] = []
    for c in kpis:
        params += [relation.alias, c, revisions.at, revisions.caused_by]
    (before,) = out.execute(f"select count(*) from {revisions.log}").fetchone()
    out.execute(f"insert into {revisions.log} ({columns}) {selects}", params)
    (after,) = out.execute(f"select count(*) from {revisions.log}").fetchone()
    out.execute(f"drop table {pairs}")
    out.execute(
        f"delete from {revisions.rows} where mart = %s and exists (select 1 from {changed} "
        f"as changed_keys where grain = {key_text})",
        (relation.alias,),
    )
    _record_published_rows(out, relation, revisions, new, changed)
    return int(after) - int(before)


def _record_published_rows(
    out: _Target, relation: ServedRelation, revisions: _Revisions, new: str, changed: str | None
) -> None:
    """Note that the rows of ``new`` (those of the changed keys) are published now."""
    where = ""
    if changed is not None:
        matches = " and ".join(f"changed_keys._key_{c} = new_rows.{c}" for c in relation.grain)
        where = f" where exists (select 1 from {changed} as changed_keys where {matches})"
    out.execute(
        f"insert into {revisions.rows} (mart, grain, period, published_at) "
        f"select cast(%s as {out.text_type}), {_grain_text('new_rows', relation.grain)}, "
        f"cast(new_rows.{relation.grain[0]} as varchar), cast(%s as timestamp) "
        f"from {new} as new_rows{where}",
        (relation.alias, revisions.at),
    )


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
        if self.path is not None:  # relative to the current folder when inside it
            shown = (
                self.path.relative_to(Path.cwd())
                if self.path.is_relative_to(Path.cwd())
                else self.path
            )
            return f"the DuckDB serving copy {shown}"
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
            raise ServiceOutage(f"cannot open {path}: {one_line(exc)}") from None
        try:
            yield KpiSession(self, conn)
        except duckdb.CatalogException as exc:
            raise NoKpiData(f"{path} lacks a served relation: {one_line(exc)}") from None
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
            raise ServiceOutage(f"cannot reach {self.where}: {one_line(exc)}") from None
        try:
            if self.kind == "postgres":
                conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with conn.cursor() as cur:
                yield KpiSession(self, cur)
        except psycopg2.errors.UndefinedTable as exc:
            raise NoKpiData(f"the marts are not built yet: {one_line(exc)}") from None
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m loaders.serving``: publish the last green build of a work directory's
    warehouse, under the run lock (not while a run holds it)."""
    from loaders.runlock import run_lock

    parser = argparse.ArgumentParser(
        prog="python -m loaders.serving",
        description="Publish the marts readers see (DuckDB: <workdir>/serving.duckdb).",
    )
    parser.add_argument("--workdir", help="work directory (default: $MUSIC_ELT_WORKDIR)")
    parser.add_argument(
        "--if-stale",
        action="store_true",
        help="only when a green build is not published yet (or the DuckDB copy is missing or "
        "of an older format)",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(workdir=Path(args.workdir) if args.workdir else None)
        if settings.warehouse.kind == "duckdb" and not settings.warehouse.duckdb_path.is_file():
            print(f"serving: no warehouse at {settings.warehouse.duckdb_path} yet")
            return 0
        with run_lock(settings, "python -m loaders.serving", wait_seconds=0):
            with open_warehouse(settings) as wh:
                wh.setup()
                (builds,) = wh.query(f"select count(*) from {BUILDS_TABLE}")[0]
                stale = publish_pending(settings, wh)
            if not builds:
                print("serving: nothing to publish yet (no green build)")
                return 0
            if args.if_stale and not stale:
                print("serving: the last green build is published")
                return 0
            publish(settings, progress=lambda line: print(f"serving:{line}"))
    except ConnectionError as exc:  # RunLocked, PublishFailed, an unreachable warehouse
        print(f"serving: not published now ({exc}); readers see the last publish")
        return 0
    except ConfigError as exc:
        print(f"serving: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
