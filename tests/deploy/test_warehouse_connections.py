"""Under Airflow every secret and endpoint comes from a connection; the environment only from
the CLI (loaders/connections.py; no Airflow import here)."""

from __future__ import annotations

import pytest

from loaders.config import ConfigError
from loaders.connections import postgres_warehouse, settings_from_connections

POSTGRES = {
    "conn_type": "postgres",
    "host": "warehouse.example.com",
    "port": 6432,
    "login": "loader",
    "password": "s3cret-pg",
    "schema": "analytics_db",
}


def test_postgres_connection_becomes_the_warehouse() -> None:
    settings = settings_from_connections(
        {"MUSIC_ELT_TARGET": "postgres", "MUSIC_ELT_READER_ROLE": "bi_readers"},
        postgres=POSTGRES,
    )
    warehouse = settings.warehouse
    assert (warehouse.kind, warehouse.host, warehouse.port) == ("postgres", POSTGRES["host"], 6432)
    assert (warehouse.user, warehouse.password, warehouse.dbname) == (
        "loader",
        "s3cret-pg",
        "analytics_db",
    )
    assert warehouse.reader_role == "bi_readers"
    assert "s3cret-pg" not in repr(settings)
    assert postgres_warehouse({**POSTGRES, "port": None}, {}).port == 5432


def test_postgres_target_needs_its_connection() -> None:
    with pytest.raises(
        ConfigError, match="MUSIC_ELT_TARGET=postgres needs the Airflow connection postgres_conn"
    ):
        settings_from_connections({"MUSIC_ELT_TARGET": "postgres"})
    with pytest.raises(ConfigError, match="postgres_conn lacks host"):
        postgres_warehouse({**POSTGRES, "host": ""}, {})


@pytest.mark.parametrize(
    ("variable", "connection"),
    [
        ("WAREHOUSE_PASSWORD", "postgres_conn or redshift_conn"),
        ("WAREHOUSE_HOST", "postgres_conn or redshift_conn"),
        ("MUSIC_ELT_RDS_DSN", "aws_rds_connection"),
        ("MUSIC_ELT_S3_ENDPOINT_URL", "aws_conn"),
    ],
)
def test_the_clis_secret_and_endpoint_variables_are_refused(variable: str, connection: str) -> None:
    """One way to configure a deployment: a DAG whose environment carries the CLI's variable
    for a secret or an endpoint stops with one line naming the connection instead; the value
    is not echoed."""
    env = {"MUSIC_ELT_TARGET": "postgres", variable: "host=x password=leak"}
    with pytest.raises(ConfigError) as caught:
        settings_from_connections(env, postgres=POSTGRES)
    message = str(caught.value)
    assert f"{variable} is set" in message and connection in message
    assert "leak" not in message
