"""Settings for a pipeline run, built once from the environment and validated on construction.

The environment variables are declared once, with their names, types and defaults, in
:class:`Environment` (read by pydantic-settings). :meth:`Settings.from_env` turns them into the
frozen :class:`Settings` the pipeline passes around; ``dataclasses.replace`` (or
``model_copy(update=...)``) gives a changed copy, validated again. Every secret comes from the
environment (or, under Airflow, from a connection turned into the same fields); nothing here is
ever logged with its password. See the README's configuration table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from loaders.errors import ConfigError

WAREHOUSE_KINDS = ("duckdb", "postgres", "redshift")
DEFAULT_WORKDIR = Path(".music-elt")
DEFAULT_RDS_TABLES = ("users", "songs")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
# DuckDB's buffer manager limit: with Python and dbt on top, `music-elt run` stays under 4 GB RSS
DEFAULT_DUCKDB_MEMORY_LIMIT = "3GB"


_MASK = "***"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# What DuckDB's memory_limit accepts: a size with a unit (1000^i or 1024^i bytes) or a share of RAM
_MEMORY = re.compile(r"^(\d+(\.\d+)?) ?([KMGT]i?B|%)$", re.IGNORECASE)
# DuckDB's resource settings and the variables that set them (dbt_project/profiles.yml reads these)
_DUCKDB_VARIABLES = {
    "memory_limit": "MUSIC_ELT_DUCKDB_MEMORY_LIMIT",
    "threads": "MUSIC_ELT_DUCKDB_THREADS",
    "temp_directory": "MUSIC_ELT_DUCKDB_TEMP_DIR",
}


def check_identifier(name: str, what: str) -> str:
    """Return ``name`` if it is a plain lower-case SQL identifier, else raise ConfigError."""
    if not _IDENT.fullmatch(name):
        raise ConfigError(
            f"{what} {name!r} is not a plain identifier (lower-case letters, digits, underscore)"
        )
    return name


def redact(dsn: str) -> str:
    """A libpq DSN or ``postgresql://`` URI as key=value pairs with the password replaced by
    ``***``, safe to print. A DSN libpq cannot parse is not echoed at all."""
    try:
        params = parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        return "<a DSN libpq cannot parse>"
    if params.get("password"):
        params["password"] = _MASK
    return make_dsn(**params)


class Environment(BaseSettings):
    """Every variable the loaders read, by its exact name. An empty variable counts as unset."""

    model_config = SettingsConfigDict(
        case_sensitive=True, env_ignore_empty=True, extra="ignore", frozen=True
    )

    workdir: Path = Field(DEFAULT_WORKDIR, alias="MUSIC_ELT_WORKDIR")
    rds_dsn: str = Field("", alias="MUSIC_ELT_RDS_DSN", repr=False)
    rds_tables: str = Field(",".join(DEFAULT_RDS_TABLES), alias="MUSIC_ELT_RDS_TABLES")
    rds_wait_seconds: float = Field(30.0, alias="MUSIC_ELT_RDS_WAIT_SECONDS")
    batch_size: int = Field(50_000, alias="MUSIC_ELT_BATCH_SIZE")
    landing_url: str = Field("", alias="MUSIC_ELT_LANDING")
    s3_endpoint_url: str = Field("", alias="MUSIC_ELT_S3_ENDPOINT_URL")
    target: str = Field("duckdb", alias="MUSIC_ELT_TARGET")
    duckdb_path: Path | None = Field(None, alias="MUSIC_ELT_DUCKDB_PATH")  # <workdir>/...
    duckdb_memory_limit: str = Field(
        DEFAULT_DUCKDB_MEMORY_LIMIT, alias="MUSIC_ELT_DUCKDB_MEMORY_LIMIT"
    )
    duckdb_threads: int | None = Field(None, alias="MUSIC_ELT_DUCKDB_THREADS")  # DuckDB's default
    duckdb_temp_dir: Path | None = Field(None, alias="MUSIC_ELT_DUCKDB_TEMP_DIR")  # <workdir>/...
    host: str = Field("localhost", alias="WAREHOUSE_HOST")
    port: int | None = Field(None, alias="WAREHOUSE_PORT")  # 5432, Redshift 5439
    user: str = Field("", alias="WAREHOUSE_USER")
    password: str = Field("", alias="WAREHOUSE_PASSWORD", repr=False)
    dbname: str = Field("", alias="WAREHOUSE_DBNAME")
    iam_role: str = Field("", alias="MUSIC_ELT_REDSHIFT_IAM_ROLE")
    region: str = Field("", alias="MUSIC_ELT_REDSHIFT_REGION")
    reader_role: str = Field("", alias="MUSIC_ELT_READER_ROLE")
    dbt_project_dir: Path = Field(DEFAULT_DBT_PROJECT_DIR, alias="MUSIC_ELT_DBT_PROJECT_DIR")
    dbt_threads: int = Field(1, alias="MUSIC_ELT_DBT_THREADS")
    dbt_unit_tests: bool = Field(False, alias="MUSIC_ELT_DBT_UNIT_TESTS")
    dbt_manifest: Path | None = Field(None, alias="MUSIC_ELT_DBT_MANIFEST")
    lock_wait_seconds: float = Field(120.0, alias="MUSIC_ELT_LOCK_WAIT_SECONDS")
    keep_rds_extracts: int = Field(3, alias="MUSIC_ELT_KEEP_RDS_EXTRACTS")
    files_per_load_group: int = Field(25, alias="MUSIC_ELT_FILES_PER_LOAD_TASK")

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> Environment:
        """The variables of ``os.environ``, or of ``env`` alone when given; ConfigError names
        a variable whose value is not of its type."""
        try:
            if env is None:
                return cls()
            names = {info.alias for info in cls.model_fields.values()}
            given = {name: value for name, value in env.items() if name in names and value}
            return _GivenEnvironment.model_validate(given)
        except ValidationError as exc:
            raise _config_error(exc) from None


class _GivenEnvironment(Environment):
    """:class:`Environment` from a given mapping only (tests, Airflow connections)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _config_error(exc: ValidationError) -> ConfigError:
    error = exc.errors()[0]
    name = ".".join(str(part) for part in error["loc"])
    if error["type"].startswith("int_"):
        return ConfigError(f"{name}={error['input']!r} is not a number")
    return ConfigError(f"{name}={error['input']!r}: {error['msg']}")


class _Copyable:
    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Self:
        """A changed copy, validated again: ``dataclasses.replace`` under pydantic's name."""
        return replace(self, **(update or {}))  # type: ignore[type-var]


@dataclass(frozen=True)
class WarehouseSettings(_Copyable):
    """Where the raw tables and marts live. ``kind`` is also the dbt target name."""

    kind: str = "duckdb"
    duckdb_path: Path = DEFAULT_WORKDIR / "warehouse.duckdb"
    host: str = "localhost"
    port: int = 5432
    user: str = ""
    password: str = field(default="", repr=False)
    dbname: str = ""
    iam_role: str = ""  # Redshift COPY ... IAM_ROLE
    region: str = ""  # Redshift COPY ... REGION, when the bucket is in another region
    reader_role: str = ""  # the role (group) granted SELECT on the published relations; "": none
    duckdb_memory_limit: str = DEFAULT_DUCKDB_MEMORY_LIMIT  # DuckDB's buffer manager, not Python
    duckdb_threads: int | None = None  # None: DuckDB's default, one per core
    duckdb_temp_dir: Path = DEFAULT_WORKDIR / "duckdb-tmp"  # where DuckDB spills beyond the limit

    def __post_init__(self) -> None:
        if self.kind not in WAREHOUSE_KINDS:
            raise ConfigError(
                f"MUSIC_ELT_TARGET={self.kind!r}: choose one of {', '.join(WAREHOUSE_KINDS)}"
            )
        if self.kind != "duckdb" and not (self.user and self.dbname):
            raise ConfigError(
                f"the {self.kind} warehouse needs WAREHOUSE_USER and WAREHOUSE_DBNAME "
                "(and WAREHOUSE_HOST, WAREHOUSE_PORT, WAREHOUSE_PASSWORD)"
            )
        if self.reader_role:
            check_identifier(self.reader_role, "MUSIC_ELT_READER_ROLE")
        if self.kind == "redshift" and not self.iam_role:
            raise ConfigError("the redshift warehouse needs MUSIC_ELT_REDSHIFT_IAM_ROLE for COPY")
        memory = _MEMORY.fullmatch(self.duckdb_memory_limit)
        if not memory or float(memory.group(1)) <= 0:
            raise ConfigError(
                f"MUSIC_ELT_DUCKDB_MEMORY_LIMIT={self.duckdb_memory_limit!r}: give a size such as "
                "3GB or 512MB (KB, MB, GB, TB; KiB ... TiB) or a share of RAM such as 50%"
            )
        if self.duckdb_threads is not None and self.duckdb_threads < 1:
            raise ConfigError(
                f"MUSIC_ELT_DUCKDB_THREADS must be at least 1, got {self.duckdb_threads} "
                "(unset: DuckDB's default, one per core)"
            )

    def duckdb_settings(self) -> dict[str, str]:
        """DuckDB's resource settings, given when the database opens: to the loaders'
        ``duckdb.connect`` and, through :meth:`dbt_env`, to dbt-duckdb (``config_options`` of
        the profile's duckdb output). ``threads`` only when set, else DuckDB's default."""
        settings = {
            "memory_limit": self.duckdb_memory_limit,
            "temp_directory": str(self.duckdb_temp_dir.resolve()),
        }
        if self.duckdb_threads is not None:
            settings["threads"] = str(self.duckdb_threads)
        return settings

    def dbt_env(self) -> dict[str, str]:
        """Environment variables that ``dbt_project/profiles.yml`` reads for this warehouse."""
        env = {"MUSIC_ELT_TARGET": self.kind}
        if self.reader_role:  # the grants config of the relations readers read in place
            env["MUSIC_ELT_READER_ROLE"] = self.reader_role
        if self.kind == "duckdb":
            env["MUSIC_ELT_DUCKDB_PATH"] = str(self.duckdb_path.resolve())
            duckdb = self.duckdb_settings()  # an empty variable: DuckDB's default
            env.update({name: duckdb.get(key, "") for key, name in _DUCKDB_VARIABLES.items()})
        else:
            env.update(
                WAREHOUSE_HOST=self.host,
                WAREHOUSE_PORT=str(self.port),
                WAREHOUSE_USER=self.user,
                WAREHOUSE_PASSWORD=self.password,
                WAREHOUSE_DBNAME=self.dbname,
            )
        return env


@dataclass(frozen=True)
class Settings(_Copyable):
    """Everything one pipeline run needs. Build it with :meth:`from_env`."""

    workdir: Path = DEFAULT_WORKDIR
    rds_dsn: str = field(default="", repr=False)  # empty: the embedded pgserver in the workdir
    rds_tables: tuple[str, ...] = DEFAULT_RDS_TABLES
    rds_wait_seconds: float = 30.0  # how long a refused RDS connection is retried
    batch_size: int = 50_000
    landing_url: str = ""  # empty: <workdir>/landing; or s3://bucket/prefix
    s3_endpoint_url: str = ""
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    dbt_project_dir: Path = DEFAULT_DBT_PROJECT_DIR
    dbt_threads: int = 1
    dbt_unit_tests: bool = False  # dbt's unit tests in a run's build (default: left to CI)
    dbt_manifest: Path | None = None  # the DAG's pre-built manifest; default: the last build's
    lock_wait_seconds: float = 120.0  # how long a second run waits for the run lock
    keep_rds_extracts: int = 3  # RDS extract folders kept per table after a green build
    files_per_load_group: int = 25  # stream files per load group: one transaction, one commit

    def __post_init__(self) -> None:
        for table in self.rds_tables:
            check_identifier(table, "RDS table")
        if self.batch_size < 1:
            raise ConfigError(f"MUSIC_ELT_BATCH_SIZE must be positive, got {self.batch_size}")
        if self.rds_wait_seconds < 0:
            raise ConfigError(
                f"MUSIC_ELT_RDS_WAIT_SECONDS must be 0 or more, got {self.rds_wait_seconds}"
            )
        if self.lock_wait_seconds < 0:
            raise ConfigError(
                f"MUSIC_ELT_LOCK_WAIT_SECONDS must be 0 or more, got {self.lock_wait_seconds}"
            )
        if self.keep_rds_extracts < 1:
            raise ConfigError(
                f"MUSIC_ELT_KEEP_RDS_EXTRACTS must be at least 1, got {self.keep_rds_extracts}"
            )
        if self.files_per_load_group < 1:
            raise ConfigError(
                f"MUSIC_ELT_FILES_PER_LOAD_TASK must be at least 1, got {self.files_per_load_group}"
            )
        if self.landing_url and not (
            self.landing_url.startswith("s3://") or "://" not in self.landing_url
        ):
            raise ConfigError(
                f"MUSIC_ELT_LANDING={self.landing_url!r}: use s3://bucket/prefix or a local path"
            )
        if self.rds_dsn:
            try:
                ports = parse_dsn(self.rds_dsn).get("port") or ""
            except psycopg2.ProgrammingError:
                raise ConfigError(
                    "MUSIC_ELT_RDS_DSN is not a libpq connection string ('host=... dbname=... "
                    "user=...') or a postgresql:// URL (not shown: it may hold a password)"
                ) from None
            for port in filter(None, ports.split(",")):  # a list for several hosts
                if not (port.isdigit() and 0 < int(port) < 65536):
                    raise ConfigError(
                        f"MUSIC_ELT_RDS_DSN has the port {port!r}: a port is a number "
                        "from 1 to 65535"
                    )

    @property
    def embedded_rds(self) -> bool:
        return not self.rds_dsn

    @property
    def pgdata(self) -> Path:
        """Data directory of the embedded RDS stand-in."""
        return self.workdir / "rds-pgdata"

    @property
    def local_landing(self) -> Path:
        return Path(self.landing_url) if self.landing_url else self.workdir / "landing"

    @property
    def dbt_target_path(self) -> Path:
        return self.workdir / "dbt" / "target"

    @property
    def dbt_manifest_path(self) -> Path:
        """The dbt manifest naming the marts: MUSIC_ELT_DBT_MANIFEST, else the last build's."""
        return self.dbt_manifest or self.dbt_target_path / "manifest.json"

    @property
    def dbt_log_path(self) -> Path:
        return self.workdir / "dbt" / "logs"

    def with_workdir(self, workdir: Path) -> Settings:
        """The same settings for another work directory (the embedded paths move with it)."""
        warehouse = self.warehouse
        if warehouse.duckdb_path == self.workdir / "warehouse.duckdb":
            warehouse = replace(warehouse, duckdb_path=workdir / "warehouse.duckdb")
        if warehouse.duckdb_temp_dir == self.workdir / "duckdb-tmp":
            warehouse = replace(warehouse, duckdb_temp_dir=workdir / "duckdb-tmp")
        return replace(self, workdir=workdir, warehouse=warehouse)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, workdir: Path | None = None
    ) -> Settings:
        """Build settings from ``MUSIC_ELT_*`` and ``WAREHOUSE_*`` variables (:class:`Environment`):
        those of ``os.environ``, or of ``env`` alone when given.

        ``workdir`` (the CLI's ``--workdir``) wins over ``MUSIC_ELT_WORKDIR``.
        """
        variables = Environment.read(env)
        work = workdir or variables.workdir
        warehouse = WarehouseSettings(
            kind=variables.target,
            duckdb_path=variables.duckdb_path or work / "warehouse.duckdb",
            host=variables.host,
            port=variables.port or (5439 if variables.target == "redshift" else 5432),
            user=variables.user,
            password=variables.password,
            dbname=variables.dbname,
            iam_role=variables.iam_role,
            region=variables.region,
            reader_role=variables.reader_role,
            duckdb_memory_limit=variables.duckdb_memory_limit.strip(),
            duckdb_threads=variables.duckdb_threads,
            duckdb_temp_dir=variables.duckdb_temp_dir or work / "duckdb-tmp",
        )
        return cls(
            workdir=work,
            rds_dsn=variables.rds_dsn,
            rds_tables=tuple(t.strip() for t in variables.rds_tables.split(",") if t.strip()),
            rds_wait_seconds=variables.rds_wait_seconds,
            batch_size=variables.batch_size,
            landing_url=variables.landing_url,
            s3_endpoint_url=variables.s3_endpoint_url,
            warehouse=warehouse,
            dbt_project_dir=variables.dbt_project_dir,
            dbt_threads=variables.dbt_threads,
            dbt_unit_tests=variables.dbt_unit_tests,
            dbt_manifest=variables.dbt_manifest,
            lock_wait_seconds=variables.lock_wait_seconds,
            keep_rds_extracts=variables.keep_rds_extracts,
            files_per_load_group=variables.files_per_load_group,
        )
