"""Turn connection records (Airflow's fields, as plain dicts) into pipeline :class:`Settings`.

Under Airflow every secret and endpoint comes from a connection; the environment only says what
to run (the target, the landing location, limits). The DAG looks up its connections
(``aws_rds_connection``, ``aws_conn``, and the warehouse's: ``postgres_conn`` or
``redshift_conn``) and passes their fields here as dicts with Airflow's field names:
``conn_type``, ``host``, ``port``, ``login``, ``password``, ``schema`` (the database for
PostgreSQL and Redshift) and ``extra`` (a dict or a JSON string). A connection that does not
exist is ``None``: its part of the stack stays what the environment says, which with no
``MUSIC_ELT_*`` variables is the embedded stack in ``MUSIC_ELT_WORKDIR``. This module does not
import Airflow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from psycopg2.extensions import make_dsn

from loaders.config import ConfigError, Settings, WarehouseSettings, variables

ConnectionFields = Mapping[str, Any]

RDS_CONN_ID = "aws_rds_connection"
S3_CONN_ID = "aws_conn"
REDSHIFT_CONN_ID = "redshift_conn"
POSTGRES_CONN_ID = "postgres_conn"
# the connection that holds the warehouse of each target (DuckDB is a local file: none)
WAREHOUSE_CONN_IDS = {"postgres": POSTGRES_CONN_ID, "redshift": REDSHIFT_CONN_ID}

# The CLI's variables for secrets and endpoints, and the connection that holds each under Airflow:
# a deployment configures them one way only, so the DAG refuses these variables.
CLI_ONLY_VARIABLES = {
    "MUSIC_ELT_RDS_DSN": RDS_CONN_ID,
    "MUSIC_ELT_S3_ENDPOINT_URL": S3_CONN_ID,
    **{
        f"WAREHOUSE_{field}": f"{POSTGRES_CONN_ID} or {REDSHIFT_CONN_ID}"
        for field in ("HOST", "PORT", "USER", "PASSWORD", "DBNAME")
    },
}

# libpq parameters an RDS connection may carry in its extra.
_LIBPQ_EXTRAS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "application_name",
    "options",
    "target_session_attrs",
)


def check_no_cli_variables(env: Mapping[str, str]) -> None:
    """ConfigError when ``env`` (a DAG's) sets a variable that only the CLI reads: under Airflow
    that secret or endpoint belongs in a connection, named in the message."""
    given = [name for name in CLI_ONLY_VARIABLES if env.get(name)]
    if given:
        name = given[0]
        raise ConfigError(
            f"{name} is set, but under Airflow it comes from the connection "
            f"{CLI_ONLY_VARIABLES[name]}: create the connection and unset "
            + ", ".join(given)
            + " (the environment configures only the CLI)"
        )


def extra_of(conn: ConnectionFields) -> dict[str, Any]:
    """The connection's extra as a dict (Airflow stores it as JSON text)."""
    extra = conn.get("extra") or {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError:
            raise ConfigError("a connection's extra is not valid JSON") from None
    if not isinstance(extra, dict):
        raise ConfigError("a connection's extra must be a JSON object")
    return extra


def rds_dsn(conn: ConnectionFields) -> str:
    """A libpq DSN (``host=... dbname=...``, built by psycopg2's ``make_dsn``) for the RDS
    connection; ``redact`` hides its password. ``schema`` is the database, as in Airflow's
    postgres connections."""
    extra = extra_of(conn)
    if extra.get("iam"):
        raise ConfigError(
            f"{RDS_CONN_ID}: IAM authentication is not supported; give the connection a login "
            "and password"
        )
    host = conn.get("host") or ""
    database = conn.get("schema") or extra.get("dbname") or ""
    if not (host and conn.get("login") and database):
        raise ConfigError(
            f"{RDS_CONN_ID} needs a host, a login and a database (the connection's schema field)"
        )
    params = {name: str(extra[name]) for name in _LIBPQ_EXTRAS if extra.get(name) is not None}
    return make_dsn(
        host=str(host),
        port=int(conn["port"]) if conn.get("port") else None,
        user=str(conn["login"]),
        password=str(conn["password"]) if conn.get("password") else None,
        dbname=str(database),
        **params,
    )


def s3_endpoint_url(conn: ConnectionFields) -> str:
    """The S3 endpoint an ``aws`` connection names (MinIO, LocalStack, moto), or ``""``."""
    extra = extra_of(conn)
    service = (extra.get("service_config") or {}).get("s3") or {}
    return str(service.get("endpoint_url") or extra.get("endpoint_url") or "")


def _login(conn_id: str, conn: ConnectionFields) -> dict[str, Any]:
    """The warehouse fields of a ``postgres`` or ``redshift`` connection (``schema`` is the
    database); its port only when given (the warehouse's default port otherwise)."""
    missing = [
        label
        for label, value in (
            ("host", conn.get("host")),
            ("login", conn.get("login")),
            ("database (the connection's schema field)", conn.get("schema")),
        )
        if not value
    ]
    if missing:
        raise ConfigError(f"{conn_id} lacks {', '.join(missing)}")
    fields = {
        "host": str(conn["host"]),
        "user": str(conn["login"]),
        "password": str(conn.get("password") or ""),
        "dbname": str(conn["schema"]),
    }
    if conn.get("port"):
        fields["port"] = conn["port"]
    return fields


def postgres_warehouse(conn: ConnectionFields, env: Mapping[str, str]) -> WarehouseSettings:
    """The PostgreSQL warehouse of a ``postgres`` connection and the variables of ``env``."""
    login = _login(POSTGRES_CONN_ID, conn)
    return WarehouseSettings(**{**variables(env)["warehouse"], "kind": "postgres", **login})


def redshift_warehouse(conn: ConnectionFields, env: Mapping[str, str]) -> WarehouseSettings:
    """The Redshift warehouse of a ``redshift`` connection and the variables of ``env``. The
    COPY role comes from the extra's ``iam_role`` (or ``MUSIC_ELT_REDSHIFT_IAM_ROLE``), the
    region from ``region`` (or ``region_name``, or ``MUSIC_ELT_REDSHIFT_REGION``)."""
    extra = extra_of(conn)
    fields = {**variables(env)["warehouse"], "kind": "redshift", **_login(REDSHIFT_CONN_ID, conn)}
    if extra.get("iam_role"):
        fields["iam_role"] = str(extra["iam_role"])
    if region := extra.get("region") or extra.get("region_name"):
        fields["region"] = str(region)
    if not fields.get("iam_role"):
        raise ConfigError(
            f"{REDSHIFT_CONN_ID} needs an IAM role for COPY: set extra.iam_role on the "
            "connection or MUSIC_ELT_REDSHIFT_IAM_ROLE"
        )
    return WarehouseSettings(**fields)


def settings_from_connections(
    env: Mapping[str, str],
    *,
    rds: ConnectionFields | None = None,
    s3: ConnectionFields | None = None,
    postgres: ConnectionFields | None = None,
    redshift: ConnectionFields | None = None,
) -> Settings:
    """Settings from the variables of ``env`` and the connections that exist.

    - ``rds`` (``aws_rds_connection``) replaces the embedded source database.
    - ``s3`` (``aws_conn``) gives the S3 endpoint; its credentials are the S3 client's business
      (the DAG builds the client from the connection). The landing location itself is
      ``MUSIC_ELT_LANDING`` (``s3://bucket/prefix``).
    - ``postgres`` (``postgres_conn``) or ``redshift`` (``redshift_conn``) is the warehouse
      when ``MUSIC_ELT_TARGET`` names it; that target without its connection is an error, and
      the ``WAREHOUSE_*`` variables (the CLI's) are not read.

    The CLI's variables for secrets and endpoints (:data:`CLI_ONLY_VARIABLES`) are an error
    here: each belongs in its connection.
    """
    check_no_cli_variables(env)
    values = variables(env)
    target = env.get("MUSIC_ELT_TARGET", "")
    if conn_id := WAREHOUSE_CONN_IDS.get(target):
        warehouse = {"postgres": postgres, "redshift": redshift}[target]
        if warehouse is None:
            raise ConfigError(f"MUSIC_ELT_TARGET={target} needs the Airflow connection {conn_id}")
        build = postgres_warehouse if target == "postgres" else redshift_warehouse
        values["warehouse"] = build(warehouse, env)
    if rds is not None:
        values["rds_dsn"] = rds_dsn(rds)
    if s3 is not None and (endpoint := s3_endpoint_url(s3)):
        values["s3_endpoint_url"] = endpoint
    return Settings.from_values(values)
