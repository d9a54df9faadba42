"""Airflow connections -> pipeline settings (loaders.connections) and -> the dbt profile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

from loaders.config import ConfigError, redact
from loaders.connections import (
    REDSHIFT_CONN_ID,
    rds_dsn,
    redshift_warehouse,
    s3_endpoint_url,
    settings_from_connections,
)
from tests.conftest import REPO
from tests.dags.helpers import load_dag

REDSHIFT = {
    "conn_type": "redshift",
    "host": "analytics.abc123.eu-west-1.redshift.amazonaws.com",
    "port": 5440,
    "login": "loader",
    "password": "s3cret/with:chars@",
    "schema": "music",
    "extra": {"iam_role": "arn:aws:iam::123456789012:role/copy", "region": "eu-west-1"},
}


def test_no_connections_means_the_embedded_stack(tmp_path: Path) -> None:
    settings = settings_from_connections({"MUSIC_ELT_WORKDIR": str(tmp_path)})
    assert settings.embedded_rds
    assert settings.workdir == tmp_path
    assert settings.warehouse.kind == "duckdb"
    assert settings.warehouse.duckdb_path == tmp_path / "warehouse.duckdb"
    assert settings.local_landing == tmp_path / "landing"


def test_rds_connection_becomes_a_dsn_that_connects(pg_database: dict[str, Any]) -> None:
    conn_fields = {
        "conn_type": "postgres",
        "host": pg_database["host"],  # a Unix socket directory
        "port": pg_database["port"],
        "login": pg_database["user"],
        "schema": pg_database["dbname"],
        "extra": json.dumps({"connect_timeout": 5}),
    }
    settings = settings_from_connections({}, rds=conn_fields)
    assert not settings.embedded_rds
    with psycopg2.connect(settings.rds_dsn) as conn, conn.cursor() as cur:
        cur.execute("select current_database()")
        assert cur.fetchone() == (pg_database["dbname"],)


def test_rds_dsn_keeps_every_field_and_redacts_the_password() -> None:
    dsn = rds_dsn(
        {
            "host": "db.example.com",
            "port": 5433,
            "login": "reader",
            "password": "p@ss word/:",
            "schema": "music",
            "extra": {"sslmode": "require"},
        }
    )
    parsed = psycopg2.extensions.parse_dsn(dsn)
    assert parsed == {
        "host": "db.example.com",
        "port": "5433",
        "user": "reader",
        "password": "p@ss word/:",
        "dbname": "music",
        "sslmode": "require",
    }
    assert "p@ss" not in redact(dsn) and "***" in redact(dsn)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"host": "h", "login": "u"}, "database"),
        ({"host": "h", "login": "u", "schema": "d", "extra": {"iam": True}}, "IAM"),
        ({"host": "h", "login": "u", "schema": "d", "extra": "{not json"}, "JSON"),
    ],
)
def test_bad_rds_connections_say_what_to_fix(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        rds_dsn(fields)


def test_s3_endpoint_from_the_aws_connection() -> None:
    assert s3_endpoint_url({"extra": {"endpoint_url": "http://minio:9000"}}) == "http://minio:9000"
    nested = {"extra": {"service_config": {"s3": {"endpoint_url": "http://s3.local"}}}}
    assert s3_endpoint_url(nested) == "http://s3.local"
    settings = settings_from_connections(
        {"MUSIC_ELT_LANDING": "s3://bucket/prefix"}, s3={"extra": {"endpoint_url": "http://x"}}
    )
    assert settings.s3_endpoint_url == "http://x"
    assert settings.landing_url == "s3://bucket/prefix"


def test_redshift_connection_becomes_the_warehouse() -> None:
    settings = settings_from_connections({"MUSIC_ELT_TARGET": "redshift"}, redshift=REDSHIFT)
    warehouse = settings.warehouse
    assert (warehouse.kind, warehouse.host, warehouse.port) == ("redshift", REDSHIFT["host"], 5440)
    assert (warehouse.user, warehouse.password, warehouse.dbname) == (
        "loader",
        REDSHIFT["password"],
        "music",
    )
    assert warehouse.iam_role == REDSHIFT["extra"]["iam_role"]
    assert warehouse.region == "eu-west-1"
    assert REDSHIFT["password"] not in repr(settings)
    # the default port is Redshift's
    assert redshift_warehouse({**REDSHIFT, "port": None}, {}).port == 5439


def test_redshift_target_needs_its_connection_and_a_copy_role() -> None:
    with pytest.raises(ConfigError, match="redshift_conn"):
        settings_from_connections({"MUSIC_ELT_TARGET": "redshift"})
    with pytest.raises(ConfigError, match="IAM role"):
        redshift_warehouse({**REDSHIFT, "extra": {}}, {})
    env_role = redshift_warehouse({**REDSHIFT, "extra": {}}, {"MUSIC_ELT_REDSHIFT_IAM_ROLE": "r"})
    assert env_role.iam_role == "r"


def test_dbt_profile_from_redshift_conn(
    dag_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The DAG's dbt tasks on the redshift target get a profile built from redshift_conn."""
    airflow_conn = {
        "conn_type": "redshift",
        "host": REDSHIFT["host"],
        "port": REDSHIFT["port"],
        "login": REDSHIFT["login"],
        "password": REDSHIFT["password"],
        "schema": REDSHIFT["schema"],
        "extra": REDSHIFT["extra"],
    }
    monkeypatch.setenv("AIRFLOW_CONN_REDSHIFT_CONN", json.dumps(airflow_conn))
    monkeypatch.setenv("MUSIC_ELT_TARGET", "redshift")
    monkeypatch.setenv("WAREHOUSE_SCHEMA", "analytics")

    dag = load_dag()
    run_task = dag.task_dict["dbt.dbt_producer_watcher"]  # the task that runs dbt
    profile_config = run_task.profile_config
    assert profile_config.target_name == "redshift"
    assert profile_config.profile_mapping.conn_id == "redshift_conn"
    assert run_task.pool == "default_pool"  # only DuckDB needs its writers serialized
    assert "MUSIC_ELT_DUCKDB_PATH" not in (run_task.env or {})

    with profile_config.ensure_profile() as (profile_path, env_vars):
        text = Path(profile_path).read_text()
    profiles = yaml.safe_load(text)
    target = profiles["music_elt"]["outputs"]["redshift"]
    assert profiles["music_elt"]["target"] == "redshift"
    assert target["type"] == "redshift"
    assert target["host"] == REDSHIFT["host"]
    assert target["port"] == 5440
    assert target["user"] == "loader"
    assert target["dbname"] == "music"  # the connection's schema field is the database
    assert target["schema"] == "analytics"  # dbt's schema comes from WAREHOUSE_SCHEMA
    assert "iam_role" not in target
    # the password is not written to the file: dbt reads it from an environment variable
    assert REDSHIFT["password"] not in text
    assert target["password"].startswith("{{ env_var(")
    assert REDSHIFT["password"] in env_vars.values()


def test_dbt_profile_for_duckdb_is_the_projects_profiles_yml(dag_env: Path) -> None:
    from music_elt_airflow import runtime

    dag_config = runtime.DagConfig.from_env()
    config = runtime.profile_config(dag_config)
    project = dag_config.settings.dbt_project_dir
    assert Path(config.profiles_yml_filepath) == project / "profiles.yml"
    assert (config.profile_name, config.target_name) == ("music_elt", "duckdb")
    assert dag_config.settings.warehouse.duckdb_path == dag_env / "warehouse.duckdb"


def test_unreachable_rds_fails_the_check_clearly_after_a_bounded_wait(
    dag_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import time

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_RDS_CONNECTION", f"postgres://reader:hunter2@127.0.0.1:{port}/music"
    )
    monkeypatch.setenv("MUSIC_ELT_RDS_WAIT_SECONDS", "2")
    check = load_dag().task_dict["check_rds_available"]
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="cannot reach the RDS database") as failure:
        check.python_callable()
    assert 2 <= time.monotonic() - started < 30
    assert "hunter2" not in str(failure.value) and "***" in str(failure.value)
    assert check.execution_timeout.total_seconds() > 2


def test_the_dags_own_settings_and_the_pipelines_are_read_once_each(
    airflow_home: Path, tmp_path: Path
) -> None:
    """Each variable has one default: the DAG's own (check_rds_available waits 120 s) beside
    the pipeline's (a run's extraction waits 30 s), read from the same variable."""
    from music_elt_airflow.runtime import DagConfig

    manifest = {"MUSIC_ELT_DBT_MANIFEST": str(tmp_path / "manifest.json")}  # not read here
    config = DagConfig.from_env(manifest, dag_folder=tmp_path / "dags")
    assert (config.rds_wait_seconds, config.settings.rds_wait_seconds) == (120.0, 30.0)
    assert (config.retries, config.schedule, config.target) == (2, "@hourly", "duckdb")
    assert config.settings.workdir == tmp_path / ".music-elt"  # beside the DAG folder
    waits = DagConfig.from_env(
        {**manifest, "MUSIC_ELT_RDS_WAIT_SECONDS": "5", "MUSIC_ELT_SCHEDULE": ""},
        dag_folder=tmp_path / "dags",
    )
    assert (waits.rds_wait_seconds, waits.settings.rds_wait_seconds) == (5.0, 5.0)
    assert waits.schedule is None  # empty: no schedule
    with pytest.raises(ConfigError, match=r"^MUSIC_ELT_TASK_RETRIES='two' is not a number$"):
        DagConfig.from_env({**manifest, "MUSIC_ELT_TASK_RETRIES": "two"})


def test_without_a_dag_folder_paths_are_the_checkouts(airflow_home: Path) -> None:
    """The default DAG folder is the checkout's dags/ (the glue's package lives inside it):
    the work directory and the dbt project are the repository's."""
    from music_elt_airflow.runtime import DagConfig

    config = DagConfig.from_env({})
    assert config.settings.workdir == REPO / ".music-elt"
    assert config.settings.dbt_project_dir == REPO / "dbt_project"


def test_at_parse_time_the_warehouse_names_the_connection_of_its_login(
    airflow_home: Path, tmp_path: Path
) -> None:
    """No placeholder login: the parse-time warehouse is the target's, its login from the
    connection a task reads; the task's settings have that login."""
    from music_elt_airflow.runtime import DagConfig

    env = {"MUSIC_ELT_TARGET": "redshift", "MUSIC_ELT_DBT_MANIFEST": str(tmp_path / "m.json")}
    parsed = DagConfig.from_env(env, dag_folder=tmp_path / "dags").settings.warehouse
    assert (parsed.kind, parsed.login_from, parsed.user) == ("redshift", REDSHIFT_CONN_ID, "")
    running = settings_from_connections(env, redshift=REDSHIFT).warehouse
    assert (running.kind, running.login_from, running.user) == ("redshift", "", "loader")


def test_every_dag_variable_is_documented_in_the_dags_readme(airflow_home: Path) -> None:
    from music_elt_airflow.runtime import DagConfig

    readme = (Path(__file__).resolve().parents[2] / "dags" / "README.md").read_text()
    names = [info.alias for info in DagConfig.model_fields.values() if info.alias]
    assert len(names) == len(DagConfig.model_fields) - 1  # all but the pipeline's settings
    for name in names:
        assert f"`{name}`" in readme, name
