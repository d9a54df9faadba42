"""Settings validation, secret redaction and header checks (no I/O). The Redshift statements
are pinned in test_redshift_statements.py."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from loaders.config import ConfigError, Settings, WarehouseSettings, check_identifier, redact
from loaders.warehouse import FileRejected, column_positions, read_header


def test_settings_defaults_to_the_embedded_stack() -> None:
    settings = Settings.from_env({}, workdir=Path("/tmp/w"))
    assert settings.embedded_rds
    assert settings.warehouse.kind == "duckdb"
    assert settings.warehouse.duckdb_path == Path("/tmp/w/warehouse.duckdb")
    assert settings.local_landing == Path("/tmp/w/landing")
    assert settings.rds_tables == ("users", "songs")


def test_settings_reject_bad_values_with_a_clear_message() -> None:
    with pytest.raises(ConfigError, match="choose one of duckdb, postgres, redshift"):
        Settings.from_env({"MUSIC_ELT_TARGET": "oracle"})
    with pytest.raises(ConfigError, match="WAREHOUSE_USER"):
        Settings.from_env({"MUSIC_ELT_TARGET": "postgres"})
    with pytest.raises(ConfigError, match="IAM_ROLE"):
        Settings.from_env(
            {"MUSIC_ELT_TARGET": "redshift", "WAREHOUSE_USER": "u", "WAREHOUSE_DBNAME": "d"}
        )
    with pytest.raises(ConfigError, match="not a number"):
        Settings.from_env({"MUSIC_ELT_BATCH_SIZE": "many"})
    with pytest.raises(ConfigError, match="not a plain identifier"):
        Settings.from_env({"MUSIC_ELT_RDS_TABLES": "users,songs;drop table x"})
    with pytest.raises(ConfigError, match="s3://"):
        Settings.from_env({"MUSIC_ELT_LANDING": "gs://bucket/x"})


def test_secrets_never_appear_in_reprs_or_redacted_dsns() -> None:
    settings = Settings.from_env(
        {
            "MUSIC_ELT_RDS_DSN": "postgresql://app:hunter2@rds.example:5432/music",
            "MUSIC_ELT_TARGET": "postgres",
            "WAREHOUSE_USER": "u",
            "WAREHOUSE_DBNAME": "d",
            "WAREHOUSE_PASSWORD": "s3cret",
        }
    )
    assert "hunter2" not in repr(settings) and "s3cret" not in repr(settings)
    # URIs and key=value DSNs both come out as libpq key=value pairs (psycopg2's parse_dsn and
    # make_dsn), every other field kept
    assert redact("postgresql://app:hunter2@rds.example:5432/music") == (
        "user=app password=*** dbname=music host=rds.example port=5432"
    )
    assert redact("host=x password=hunter2 user=y") == "user=y password=*** host=x"
    assert redact("host=x user='a b' password='p w'") == "user='a b' password=*** host=x"
    # a DSN libpq cannot parse is never echoed (it could hold a password in any shape)
    assert "hunter2" not in redact("password=hunter2 oops")
    assert settings.warehouse.dbt_env()["WAREHOUSE_PASSWORD"] == "s3cret"


def test_settings_read_os_environ_like_a_given_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "MUSIC_ELT_WORKDIR": "/tmp/w",
        "MUSIC_ELT_RDS_TABLES": " users , songs,,extra_table ",
        "MUSIC_ELT_BATCH_SIZE": "7",
        "MUSIC_ELT_TARGET": "redshift",
        "WAREHOUSE_USER": "u",
        "WAREHOUSE_DBNAME": "d",
        "MUSIC_ELT_REDSHIFT_IAM_ROLE": "arn:role",
        "MUSIC_ELT_DUCKDB_PATH": "",  # empty counts as unset
    }
    for name in _variable_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from_environ = Settings.from_env()
    assert from_environ == Settings.from_env(env)
    assert from_environ.rds_tables == ("users", "songs", "extra_table")
    assert from_environ.batch_size == 7
    assert from_environ.warehouse.port == 5439  # Redshift's default port
    assert from_environ.warehouse.duckdb_path == Path("/tmp/w/warehouse.duckdb")
    # a given mapping is read alone: the process environment does not leak into it
    assert Settings.from_env({}).warehouse.kind == "duckdb"
    monkeypatch.setenv("MUSIC_ELT_DBT_THREADS", "four")
    with pytest.raises(ConfigError, match=r"^MUSIC_ELT_DBT_THREADS='four' is not a number$"):
        Settings.from_env()


def test_settings_copies_are_validated_again() -> None:
    settings = Settings.from_env({}, workdir=Path("/tmp/w"))
    assert settings.model_copy(update={"batch_size": 10}).batch_size == 10
    assert settings.model_copy(update={"rds_tables": ("users",)}).rds_tables == ("users",)
    with pytest.raises(ConfigError, match="not a plain identifier"):
        settings.model_copy(update={"rds_tables": ("users; drop",)})
    with pytest.raises(ConfigError, match="WAREHOUSE_USER"):
        settings.warehouse.model_copy(update={"kind": "postgres"})
    with pytest.raises(AttributeError):
        settings.batch_size = 1  # type: ignore[misc]


def test_duckdb_resource_settings_are_validated() -> None:
    with pytest.raises(
        ConfigError, match=r"^MUSIC_ELT_DUCKDB_MEMORY_LIMIT='lots': give a size such as 3GB"
    ):
        Settings.from_env({"MUSIC_ELT_DUCKDB_MEMORY_LIMIT": "lots"})
    for bad in ("3", "0GB", "-1GB", "3 gigabytes", "3GB'; set threads = 1; --", "0%"):
        with pytest.raises(ConfigError, match="MUSIC_ELT_DUCKDB_MEMORY_LIMIT"):
            Settings.from_env({"MUSIC_ELT_DUCKDB_MEMORY_LIMIT": bad})
    for good in ("512MB", "2GiB", "1.5 GB", "3gb", "50%"):
        limit = Settings.from_env({"MUSIC_ELT_DUCKDB_MEMORY_LIMIT": f" {good} "}).warehouse
        assert limit.duckdb_settings()["memory_limit"] == good
    with pytest.raises(ConfigError, match=r"^MUSIC_ELT_DUCKDB_THREADS must be at least 1, got 0"):
        Settings.from_env({"MUSIC_ELT_DUCKDB_THREADS": "0"})
    with pytest.raises(ConfigError, match=r"^MUSIC_ELT_DUCKDB_THREADS='many' is not a number$"):
        Settings.from_env({"MUSIC_ELT_DUCKDB_THREADS": "many"})


def test_duckdb_resource_settings_defaults_and_what_dbt_gets() -> None:
    settings = Settings.from_env({}, workdir=Path("/tmp/w"))
    # threads left to DuckDB (one per core); the spill directory inside the work directory
    assert settings.warehouse.duckdb_settings() == {
        "memory_limit": "3GB",
        "temp_directory": "/tmp/w/duckdb-tmp",
    }
    assert settings.with_workdir(Path("/tmp/v")).warehouse.duckdb_temp_dir == Path(
        "/tmp/v/duckdb-tmp"
    )
    env = settings.warehouse.dbt_env()
    assert env["MUSIC_ELT_DUCKDB_MEMORY_LIMIT"] == "3GB"
    assert env["MUSIC_ELT_DUCKDB_TEMP_DIR"] == "/tmp/w/duckdb-tmp"
    assert env["MUSIC_ELT_DUCKDB_THREADS"] == ""  # empty: the profile leaves threads out
    chosen = Settings.from_env(
        {
            "MUSIC_ELT_DUCKDB_MEMORY_LIMIT": "1GB",
            "MUSIC_ELT_DUCKDB_THREADS": "2",
            "MUSIC_ELT_DUCKDB_TEMP_DIR": "/scratch/spill",
        },
        workdir=Path("/tmp/w"),
    )
    assert chosen.with_workdir(Path("/tmp/v")).warehouse.duckdb_settings() == {
        "memory_limit": "1GB",
        "threads": "2",
        "temp_directory": "/scratch/spill",  # a chosen directory stays where it was put
    }


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"MUSIC_ELT_DUCKDB_MEMORY_LIMIT": "1GB", "MUSIC_ELT_DUCKDB_THREADS": "1"},
        {"MUSIC_ELT_DUCKDB_TEMP_DIR": "/scratch/it's here"},
    ],
)
def test_the_dbt_profile_opens_duckdb_with_the_loaders_settings(env: dict[str, str]) -> None:
    """What dbt-duckdb passes to ``duckdb.connect``: the profile's ``config_options`` rendered
    with the variables ``music-elt`` sets for dbt, equal to the loaders' own settings."""
    from dbt_common.context import set_invocation_context

    warehouse = Settings.from_env(env, workdir=Path("/tmp/w")).warehouse
    set_invocation_context(warehouse.dbt_env())
    assert _profile_duckdb_config() == warehouse.duckdb_settings()
    # dbt by hand, no variable set: the same defaults (a path relative to dbt_project/)
    set_invocation_context({})
    assert _profile_duckdb_config() == {
        "memory_limit": WarehouseSettings().duckdb_memory_limit,
        "temp_directory": "../.music-elt/duckdb-tmp",
    }


def _profile_duckdb_config() -> dict[str, str]:
    import yaml
    from dbt.config.renderer import ProfileRenderer

    profiles = Path(__file__).resolve().parents[2] / "dbt_project" / "profiles.yml"
    output = yaml.safe_load(profiles.read_text())["music_elt"]["outputs"]["duckdb"]
    rendered: dict[str, str] = ProfileRenderer({}).render_data(output)["config_options"]
    return rendered


def test_every_variable_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("## Configuration") :]
    for name in _variable_names():
        assert f"`{name}`" in table, name


def _variable_names() -> list[str]:
    """Every variable the settings read: the alias of each field that has one."""
    return [
        str(info.alias)
        for model in (Settings, WarehouseSettings)
        for info in model.model_fields.values()
        if info.alias
    ]


def test_identifiers_are_checked() -> None:
    assert check_identifier("track_genre", "column") == "track_genre"
    for bad in ("Track", "a-b", 'x"; drop', "", "1a"):
        with pytest.raises(ConfigError):
            check_identifier(bad, "column")


class _Bytes:
    """A landing store holding one object in memory (read_header only opens)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def open(self, key: str) -> io.BytesIO:
        return io.BytesIO(self.data)


@pytest.mark.parametrize(
    ("data", "key", "expected"),
    [
        (b"user_id,track_id,listen_time\n1,a,b\n", "a.csv", ["user_id", "track_id", "listen_time"]),
        (
            b"\xef\xbb\xbfUser_ID , Track_ID,listen_time\r\n",
            "a.csv",
            ["user_id", "track_id", "listen_time"],
        ),
    ],
)
def test_read_header_normalises(data: bytes, key: str, expected: list[str]) -> None:
    assert read_header(_Bytes(data), key) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        (b"", "a.csv", "empty file"),
        (b"\x1f\x8bnot really gzip", "a.csv.gz", "gzip"),
        (b"\xff\xfe\x00u\x00s", "a.csv", "UTF-8"),
    ],
)
def test_read_header_refuses_files_that_are_not_csv(data: bytes, key: str, reason: str) -> None:
    with pytest.raises(FileRejected, match=reason):
        read_header(_Bytes(data), key)  # type: ignore[arg-type]


def test_column_positions_are_by_name() -> None:
    header = ["listen_time", "extra", "track_id", "user_id"]
    assert column_positions(header, ("user_id", "track_id", "listen_time")) == {
        "user_id": 4,
        "track_id": 3,
        "listen_time": 1,
    }
    with pytest.raises(FileRejected, match="lacks required column"):
        column_positions(["user_id"], ("user_id", "track_id"))


def test_seeded_column_names_are_made_plain_identifiers() -> None:
    from loaders.demo.seed import source_column_names

    assert source_column_names(
        ["Unnamed: 0", "Track ID", "popularity", "Popularity", "9x", ""]
    ) == [
        "id",
        "track_id",
        "popularity",
        "popularity_2",
        "c_9x",
        "column_6",
    ]
    assert source_column_names(["\ufeff", "track_id"]) == ["id", "track_id"]


def test_seed_refuses_to_replace_tables_of_a_real_database(tmp_path: Path) -> None:
    from loaders.cli import main, seed

    settings = Settings.from_env(
        {"MUSIC_ELT_RDS_DSN": "host=rds.example user=etl dbname=music"}, workdir=tmp_path
    )
    with pytest.raises(ConfigError, match="--replace-source-tables"):
        seed(settings, tmp_path)
    assert main(["seed", "--from-dir", str(tmp_path / "missing")]) == 2
