"""Airflow connections as the plain dicts :mod:`loaders.connections` reads (the DAG's settings,
its landing zone and its alert channels look them up when a task runs)."""

from __future__ import annotations

from typing import Any


def connection(conn_id: str) -> dict[str, Any] | None:
    """An Airflow connection's fields as a plain dict, or None when it is not defined."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
    return {
        "conn_type": conn.conn_type,
        "host": conn.host,
        "port": conn.port,
        "login": conn.login,
        "password": conn.password,
        "schema": conn.schema,
        "extra": conn.extra_dejson,
    }
