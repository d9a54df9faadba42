"""``music-elt check``: will a run work against the configured warehouse and landing zone?

It asks the warehouse and the landing zone, changes nothing, and prints one line per check with
what to fix. A check that fails means a run would fail (exit 1); a warning names what readers
or operators will miss without failing the run. The privileges checked are those the README's
"Privileges" section lists:

- the loader/dbt user: CREATE on the database only while a schema the run uses is missing
  (schemas are looked up before they are created); USAGE and CREATE on each schema it writes
  (the raw schemas, dbt's ``staging``, ``intermediate``, ``marts``, ``kpi_build``, the publish
  step's ``served``); TEMP on the database (the loaders' COPY tables); SELECT, INSERT and
  UPDATE on the ledger and INSERT on the raw streams table once they exist;
- the reader role (``MUSIC_ELT_READER_ROLE``): USAGE on each schema of the published relations
  and SELECT on each of them that exists (the publish step grants these; a relation not yet
  published is said to be so);
- Redshift: the COPY role (``MUSIC_ELT_REDSHIFT_IAM_ROLE``) is an IAM role ARN and the landing
  zone is on S3;
- the landing zone answers (an S3 bucket is listed, a local directory is writable).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from loaders.config import Settings
from loaders.errors import one_line
from loaders.landing import STREAMS_PREFIX, S3Landing
from loaders.serving import SERVED
from loaders.warehouse import LEDGER_TABLE, RAW_SCHEMAS, STREAMS_TABLE, Warehouse, open_warehouse

DBT_SCHEMAS = ("staging", "intermediate", "marts", "kpi_build")
SERVED_SCHEMAS = tuple(sorted({name.split(".")[0] for name in SERVED}))
WRITTEN_SCHEMAS = (*RAW_SCHEMAS, *DBT_SCHEMAS, "served")
# an IAM role ARN (several may be chained with commas: AWS, "Authorizing COPY ... IAM_ROLE")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")


@dataclass(frozen=True)
class Check:
    """One line of the report: ``status`` is ok, warn or FAIL."""

    status: str
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.detail}"


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in order; the warehouse checks stop at a connection that fails."""
    checks = list(_landing_checks(settings))
    if settings.warehouse.kind == "redshift":
        checks.append(_iam_role_check(settings))
    try:
        wh = open_warehouse(settings).__enter__()
    except ConnectionError as exc:
        return [Check("FAIL", "connection", f"{exc} (fix WAREHOUSE_* or the network)"), *checks]
    try:
        found = [Check("ok", "connection", _where(settings))]
        if settings.warehouse.kind == "duckdb":
            found += list(_duckdb_checks(settings, wh))
        else:
            found += list(_privilege_checks(settings, wh))
            found += list(_reader_checks(settings, wh))
    finally:
        wh.__exit__(None, None, None)
    return found + checks


def main(settings: Settings, say: Callable[[str], None] = print) -> int:
    """Print the checks; 1 when one failed (a run would fail), else 0."""
    checks = run_checks(settings)
    for check in checks:
        say(check.line())
    failed = sum(check.status == "FAIL" for check in checks)
    warned = sum(check.status == "warn" for check in checks)
    say(f"{len(checks)} checks: {failed} failed, {warned} warnings")
    return 1 if failed else 0


def _where(settings: Settings) -> str:
    w = settings.warehouse
    if w.kind == "duckdb":
        return f"DuckDB file {w.duckdb_path}"
    return f"{w.kind} {w.user}@{w.host}:{w.port}/{w.dbname}"


def _duckdb_checks(settings: Settings, wh: Warehouse) -> Iterator[Check]:
    path = settings.warehouse.duckdb_path
    writable = os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))
    yield Check(
        "ok" if writable else "FAIL",
        "warehouse file",
        "writable" if writable else f"{path} is not writable by this user: fix its permissions",
    )
    with wh.transaction() as cur:
        missing = [s for s in WRITTEN_SCHEMAS if not wh._schema_exists(cur, s)]
    yield Check(
        "ok",
        "schemas",
        "all present" if not missing else f"created by the first run: {', '.join(missing)}",
    )


def _privilege_checks(settings: Settings, wh: Warehouse) -> Iterator[Check]:
    with wh.transaction() as cur:
        database_create, temp = _ask(
            cur,
            "select has_database_privilege(current_database(), 'CREATE'), "
            "has_database_privilege(current_database(), 'TEMP')",
        )
        missing = []
        for schema in WRITTEN_SCHEMAS:
            if not wh._schema_exists(cur, schema):
                missing.append(schema)
                continue
            usage, create = _ask(
                cur,
                "select has_schema_privilege(%s, 'USAGE'), has_schema_privilege(%s, 'CREATE')",
                (schema, schema),
            )
            lacks = [p for p, held in (("USAGE", usage), ("CREATE", create)) if not held]
            yield Check(
                "ok" if not lacks else "FAIL",
                f"schema {schema}",
                "USAGE and CREATE"
                if not lacks
                else f"{settings.warehouse.user} lacks {' and '.join(lacks)}: "
                f"grant {', '.join(lacks).lower()} on schema {schema} to {settings.warehouse.user}",
            )
        if missing:
            yield Check(
                "ok" if database_create else "FAIL",
                "missing schemas",
                f"{', '.join(missing)} will be created by the run"
                if database_create
                else f"{', '.join(missing)} do not exist and {settings.warehouse.user} lacks "
                "CREATE on the database: create them (and grant usage, create on them to "
                f"{settings.warehouse.user}) or grant create on database "
                f"{settings.warehouse.dbname} to {settings.warehouse.user}",
            )
        yield Check(
            "ok" if temp else "FAIL",
            "temporary tables",
            "TEMP on the database"
            if temp
            else f"{settings.warehouse.user} lacks TEMP (the loaders COPY into a temporary "
            f"table): grant temp on database {settings.warehouse.dbname} to "
            f"{settings.warehouse.user}",
        )
        for table, needed in (
            (LEDGER_TABLE, ("SELECT", "INSERT", "UPDATE")),
            (STREAMS_TABLE, ("SELECT", "INSERT")),
        ):
            schema, name = table.split(".")
            if not wh._columns(cur, schema, name):
                yield Check("ok", table, "created by the first run")
                continue
            held = _ask(
                cur,
                "select " + ", ".join("has_table_privilege(%s, %s)" for _ in needed),
                tuple(x for p in needed for x in (table, p)),
            )
            lacks = [p for p, ok in zip(needed, held, strict=True) if not ok]
            yield Check(
                "ok" if not lacks else "FAIL",
                table,
                ", ".join(needed)
                if not lacks
                else f"{settings.warehouse.user} lacks {', '.join(lacks)}: grant "
                f"{', '.join(lacks).lower()} on {table} to {settings.warehouse.user}",
            )


def _reader_checks(settings: Settings, wh: Warehouse) -> Iterator[Check]:
    role = settings.warehouse.reader_role
    if not role:
        yield Check(
            "ok",
            "reader role",
            "none set (MUSIC_ELT_READER_ROLE is empty: readers need grants of their own)",
        )
        return
    with wh.transaction() as cur:
        if settings.warehouse.kind == "redshift":
            (exists,) = _ask(
                cur,
                "select (select count(*) from svv_roles where role_name = %s) "
                "+ (select count(*) from pg_group where groname = %s)",
                (role, role),
            )
        else:
            (exists,) = _ask(cur, "select count(*) from pg_roles where rolname = %s", (role,))
        if not exists:
            yield Check(
                "FAIL",
                "reader role",
                f"{role} does not exist (the publish step grants it access): create role "
                f"{role}, or empty MUSIC_ELT_READER_ROLE",
            )
            return
        for schema in SERVED_SCHEMAS:
            if not wh._schema_exists(cur, schema):
                yield Check("warn", f"reader {schema}", "not published yet (no schema)")
                continue
            (usage,) = _ask(cur, *_reader_usage(settings, role, schema))
            yield Check(
                "ok" if usage else "warn",
                f"reader {schema}",
                f"{role} has USAGE"
                if usage
                else f"{role} lacks USAGE: readers get 'permission denied' until the next "
                f"publish grants it (or: grant usage on schema {schema} to {role})",
            )
        for relation in sorted(SERVED):
            schema, name = relation.split(".")
            if not wh._columns(cur, schema, name):
                yield Check("warn", f"reader {relation}", "not published yet")
                continue
            (select,) = _ask(cur, *_reader_select(settings, role, relation))
            yield Check(
                "ok" if select else "warn",
                f"reader {relation}",
                f"{role} has SELECT"
                if select
                else f"{role} lacks SELECT: the next publish grants it (or: grant select "
                f"on {relation} to {role})",
            )


def _reader_usage(settings: Settings, role: str, schema: str) -> tuple[str, tuple[Any, ...]]:
    if settings.warehouse.kind == "redshift":  # has_schema_privilege takes users, not roles
        return (
            "select count(*) from svv_schema_privileges where namespace_name = %s "
            "and identity_name = %s and privilege_type = 'USAGE'",
            (schema, role),
        )
    return "select has_schema_privilege(%s, %s, 'USAGE')", (role, schema)


def _reader_select(settings: Settings, role: str, relation: str) -> tuple[str, tuple[Any, ...]]:
    if settings.warehouse.kind == "redshift":
        schema, name = relation.split(".")
        return (
            "select count(*) from svv_relation_privileges where namespace_name = %s "
            "and relation_name = %s and identity_name = %s and privilege_type = 'SELECT'",
            (schema, name, role),
        )
    return "select has_table_privilege(%s, %s, 'SELECT')", (role, relation)


def _iam_role_check(settings: Settings) -> Check:
    role = settings.warehouse.iam_role
    if all(_ROLE_ARN.match(part.strip()) for part in role.split(",")):
        return Check("ok", "COPY IAM role", role)
    return Check(
        "FAIL",
        "COPY IAM role",
        f"MUSIC_ELT_REDSHIFT_IAM_ROLE={role!r} is not an IAM role ARN "
        "(arn:aws:iam::<account>:role/<name>) associated with the cluster",
    )


def _landing_checks(settings: Settings) -> Iterator[Check]:
    from loaders.pipeline import landing_store

    if settings.warehouse.kind == "redshift" and not settings.landing_url.startswith("s3://"):
        yield Check(
            "FAIL",
            "landing zone",
            "Redshift loads from S3 only: set MUSIC_ELT_LANDING=s3://bucket/prefix",
        )
        return
    try:
        landing = landing_store(settings)
        if isinstance(landing, S3Landing):
            landing.client.list_objects_v2(
                Bucket=landing.bucket, Prefix=landing.prefix + STREAMS_PREFIX, MaxKeys=1
            )
        elif not os.access(landing.url, os.W_OK):
            raise PermissionError(f"{landing.url} is not writable by this user")
    except Exception as exc:
        yield Check(
            "FAIL",
            "landing zone",
            f"{settings.landing_url or settings.local_landing}: {one_line(exc)} (fix the "
            "bucket name, the credentials or MUSIC_ELT_S3_ENDPOINT_URL)",
        )
        return
    yield Check("ok", "landing zone", f"{landing.url} answers")


def _ask(cur: Any, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    cur.execute(sql, params)
    return tuple(cur.fetchone())
