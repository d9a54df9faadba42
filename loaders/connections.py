"""Turn connection records (Airflow's fields, as plain dicts) into pipeline :class:`Settings`.

The DAG looks up its connections (``aws_rds_connection``, ``aws_conn``, ``redshift_conn``) and
passes their fields here as dicts with Airflow's field names: ``conn_type``, ``host``, ``port``,
``login``, ``password``, ``schema`` (the database for PostgreSQL and Redshift) and ``extra``
(a dict or a JSON string). A connection that does not exist is ``None``: its part of the stack
stays what the environment says, which with no ``MUSIC_ELT_*`` variables is the embedded stack
in ``MUSIC_ELT_WORKDIR``. This module does not import Airflow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from psycopg2.extensions import make_dsn

from loaders.config import ConfigError, Settings, WarehouseSettings

ConnectionFields = Mapping[str, Any]

RDS_CONN_ID = "aws_rds_connection"
S3_CONN_ID = "aws_conn"
REDSHIFT_CONN_ID = "redshift_conn"

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


def redshift_warehouse(conn: ConnectionFields, env: Mapping[str, str]) -> WarehouseSettings:
    """The Redshift warehouse of a ``redshift`` connection. The COPY role comes from the extra's
    ``iam_role`` (or ``MUSIC_ELT_REDSHIFT_IAM_ROLE``), the region from ``region``."""
    extra = extra_of(conn)
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
        raise ConfigError(f"{REDSHIFT_CONN_ID} lacks {', '.join(missing)}")
    iam_role = str(extra.get("iam_role") or env.get("MUSIC_ELT_REDSHIFT_IAM_ROLE", ""))
    if not iam_role:
        raise ConfigError(
            f"{REDSHIFT_CONN_ID} needs an IAM role for COPY: set extra.iam_role on the "
            "connection or MUSIC_ELT_REDSHIFT_IAM_ROLE"
        )
    return WarehouseSettings(
        kind="redshift",
        host=str(conn["host"]),
        port=int(conn.get("port") or 5439),
        user=str(conn["login"]),
        password=str(conn.get("password") or ""),
        dbname=str(conn["schema"]),
        iam_role=iam_role,
        region=str(
            extra.get("region")
            or extra.get("region_name")
            or env.get("MUSIC_ELT_REDSHIFT_REGION")
            or ""
        ),
    )


def settings_from_connections(
    env: Mapping[str, str],
    *,
    rds: ConnectionFields | None = None,
    s3: ConnectionFields | None = None,
    redshift: ConnectionFields | None = None,
) -> Settings:
    """Settings from the environment, overridden by the connections that exist.

    - ``rds`` (``aws_rds_connection``) replaces the embedded source database.
    - ``s3`` (``aws_conn``) gives the S3 endpoint; its credentials are the S3 client's business
      (the DAG builds the client from the connection). The landing location itself is
      ``MUSIC_ELT_LANDING`` (``s3://bucket/prefix``).
    - ``redshift`` (``redshift_conn``) is the warehouse when ``MUSIC_ELT_TARGET=redshift``;
      that target without the connection is an error.
    """
    redshift_target = env.get("MUSIC_ELT_TARGET") == "redshift"
    if redshift_target and redshift is None:
        raise ConfigError(
            f"MUSIC_ELT_TARGET=redshift needs the Airflow connection {REDSHIFT_CONN_ID}"
        )
    # The redshift warehouse comes from the connection, not from WAREHOUSE_* variables.
    settings = Settings.from_env({**env, "MUSIC_ELT_TARGET": "duckdb"} if redshift_target else env)
    if rds is not None:
        settings = replace(settings, rds_dsn=rds_dsn(rds))
    if s3 is not None and (endpoint := s3_endpoint_url(s3)):
        settings = replace(settings, s3_endpoint_url=endpoint)
    if redshift_target and redshift is not None:
        settings = replace(settings, warehouse=redshift_warehouse(redshift, env))
    return settings
