"""Settings for a pipeline run, built once from the environment and validated on construction.

One pydantic-settings model, :class:`Settings` (its warehouse nested in
:class:`WarehouseSettings`), declares every variable once: its field, type, default and, as the
field's alias, the variable's exact name. ``Settings.from_env()`` reads ``os.environ`` or a given
mapping; under Airflow the DAG completes the same values with its connections
(:mod:`loaders.connections`). An invalid value raises a one-line :class:`ConfigError`;
``model_copy(update=...)`` gives a changed copy, validated again. Nothing here is ever logged
with its password. See the README's configuration table.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Self

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
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


_IN_WORKDIR = {"duckdb_path": "warehouse.duckdb", "duckdb_temp_dir": "duckdb-tmp"}
"""The embedded warehouse's files, by default in the work directory (they move with it)."""


class ValidatedModel(BaseModel):
    """Frozen and validated on construction; a ConfigError says what is wrong in one line.

    ``model_copy(update=...)`` gives a changed copy, validated again (pydantic's own does not
    validate). Assigning an attribute raises AttributeError, as for any read-only attribute.
    Fields are given by name; each field's alias is the environment variable that sets it.
    """

    model_config = ConfigDict(frozen=True, validate_by_name=True, validate_by_alias=False)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _config_error(exc, type(self)) from None

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Self:
        """An instance from field values alone (no environment variable is read)."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise _config_error(exc, cls) from None

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        return self.from_values({**dict(self), **(update or {})})

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: use model_copy(update=...)")


def _config_error(exc: ValidationError, model: type[BaseModel]) -> ConfigError:
    """The first error, named by its variable: the alias of the field it is about."""
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):  # a check of a model validator
        return cause
    name = ""
    for part in error["loc"]:  # ("warehouse", "duckdb_threads"): nested models' fields
        info = model.model_fields.get(str(part))
        if info is None:
            break
        name = info.alias or str(part)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            model = info.annotation
    if error["type"].startswith("int_"):
        return ConfigError(f"{name}={error['input']!r} is not a number")
    return ConfigError(f"{name}={error['input']!r}: {error['msg']}")


def _default_port(values: dict[str, Any]) -> int:
    return 5439 if values.get("kind") == "redshift" else 5432


class WarehouseSettings(ValidatedModel):
    """Where the raw tables and marts live. ``kind`` is also the dbt target name."""

    kind: str = Field("duckdb", alias="MUSIC_ELT_TARGET")
    duckdb_path: Path = Field(
        DEFAULT_WORKDIR / _IN_WORKDIR["duckdb_path"], alias="MUSIC_ELT_DUCKDB_PATH"
    )
    host: str = Field("localhost", alias="WAREHOUSE_HOST")
    port: int = Field(default_factory=_default_port, alias="WAREHOUSE_PORT")  # Redshift: 5439
    user: str = Field("", alias="WAREHOUSE_USER")
    password: str = Field("", alias="WAREHOUSE_PASSWORD", repr=False)
    dbname: str = Field("", alias="WAREHOUSE_DBNAME")
    iam_role: str = Field("", alias="MUSIC_ELT_REDSHIFT_IAM_ROLE")  # Redshift COPY ... IAM_ROLE
    region: str = Field("", alias="MUSIC_ELT_REDSHIFT_REGION")  # COPY ... REGION, another region
    # the role (group) granted SELECT on the published relations; "": none
    reader_role: str = Field("", alias="MUSIC_ELT_READER_ROLE")
    # DuckDB's buffer manager, not Python
    duckdb_memory_limit: Annotated[str, StringConstraints(strip_whitespace=True)] = Field(
        DEFAULT_DUCKDB_MEMORY_LIMIT, alias="MUSIC_ELT_DUCKDB_MEMORY_LIMIT"
    )
    # None: DuckDB's default, one per core
    duckdb_threads: int | None = Field(None, alias="MUSIC_ELT_DUCKDB_THREADS")
    # where DuckDB spills beyond the limit
    duckdb_temp_dir: Path = Field(
        DEFAULT_WORKDIR / _IN_WORKDIR["duckdb_temp_dir"], alias="MUSIC_ELT_DUCKDB_TEMP_DIR"
    )
    # the Airflow connection that gives host, port, user, password, database (and Redshift's
    # COPY role) when a task runs: the DAG's settings at parse time lack them; "": these fields
    login_from: str = ""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.kind not in WAREHOUSE_KINDS:
            raise ConfigError(
                f"MUSIC_ELT_TARGET={self.kind!r}: choose one of {', '.join(WAREHOUSE_KINDS)}"
            )
        login = not self.login_from  # the fields, not a connection, give the login
        if login and self.kind != "duckdb" and not (self.user and self.dbname):
            raise ConfigError(
                f"the {self.kind} warehouse needs WAREHOUSE_USER and WAREHOUSE_DBNAME "
                "(and WAREHOUSE_HOST, WAREHOUSE_PORT, WAREHOUSE_PASSWORD)"
            )
        if self.reader_role:
            check_identifier(self.reader_role, "MUSIC_ELT_READER_ROLE")
        if login and self.kind == "redshift" and not self.iam_role:
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
        return self

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


class Settings(ValidatedModel, BaseSettings):
    """Everything one pipeline run needs. ``Settings()`` and :meth:`from_env` read it from the
    environment; :func:`variables` gives the values of a mapping of variables."""

    model_config = SettingsConfigDict(frozen=True, validate_by_name=True, validate_by_alias=False)

    workdir: Path = Field(DEFAULT_WORKDIR, alias="MUSIC_ELT_WORKDIR")
    # empty: the embedded pgserver in the workdir
    rds_dsn: str = Field("", alias="MUSIC_ELT_RDS_DSN", repr=False)
    rds_tables: tuple[str, ...] = Field(DEFAULT_RDS_TABLES, alias="MUSIC_ELT_RDS_TABLES")
    # how long a refused RDS connection is retried
    rds_wait_seconds: float = Field(30.0, alias="MUSIC_ELT_RDS_WAIT_SECONDS")
    batch_size: int = Field(50_000, alias="MUSIC_ELT_BATCH_SIZE")
    landing_url: str = Field("", alias="MUSIC_ELT_LANDING")  # empty: <workdir>/landing
    s3_endpoint_url: str = Field("", alias="MUSIC_ELT_S3_ENDPOINT_URL")
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    dbt_project_dir: Path = Field(DEFAULT_DBT_PROJECT_DIR, alias="MUSIC_ELT_DBT_PROJECT_DIR")
    dbt_threads: int = Field(1, alias="MUSIC_ELT_DBT_THREADS")
    # dbt's unit tests in a run's build (default: left to CI)
    dbt_unit_tests: bool = Field(False, alias="MUSIC_ELT_DBT_UNIT_TESTS")
    # the DAG's pre-built manifest; default: the last build's
    dbt_manifest: Path | None = Field(None, alias="MUSIC_ELT_DBT_MANIFEST")
    # how long a second run waits for the run lock
    lock_wait_seconds: float = Field(120.0, alias="MUSIC_ELT_LOCK_WAIT_SECONDS")
    # RDS extract folders kept per table after a green build
    keep_rds_extracts: int = Field(3, alias="MUSIC_ELT_KEEP_RDS_EXTRACTS")
    # stream files per load group: one transaction, one commit
    files_per_load_group: int = Field(25, alias="MUSIC_ELT_FILES_PER_LOAD_TASK")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The values given, then the variables being read (:meth:`from_env`), by default
        those of ``os.environ``."""
        env = _READING.get()
        return (init_settings, _Variables(settings_cls, os.environ if env is None else env))

    @field_validator("rds_tables", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(t.strip() for t in value.split(",") if t.strip())
        return value

    @model_validator(mode="before")
    @classmethod
    def _embedded_files_in_workdir(cls, data: Any) -> Any:
        """A warehouse read from variables keeps its DuckDB files in the work directory."""
        if isinstance(data, dict) and isinstance(warehouse := data.get("warehouse", {}), dict):
            workdir = Path(data.get("workdir") or cls.model_fields["workdir"].default)
            files = {name: workdir / file for name, file in _IN_WORKDIR.items()}
            data = {**data, "warehouse": {**files, **warehouse}}
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
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
        return self

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
        moved = {
            name: workdir / file
            for name, file in _IN_WORKDIR.items()
            if getattr(self.warehouse, name) == self.workdir / file
        }
        return self.model_copy(
            update={"workdir": workdir, "warehouse": self.warehouse.model_copy(update=moved)}
        )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, workdir: Path | None = None
    ) -> Settings:
        """Build settings from the ``MUSIC_ELT_*`` and ``WAREHOUSE_*`` variables (each field's
        alias): those of ``os.environ``, or of ``env`` alone when given.

        ``workdir`` (the CLI's ``--workdir``) wins over ``MUSIC_ELT_WORKDIR``.
        """
        return cls._reading(env, {"workdir": workdir} if workdir else {})

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Self:
        """Settings from field values alone (no variable is read)."""
        return cls._reading({}, values)

    @classmethod
    def _reading(cls, env: Mapping[str, str] | None, values: Mapping[str, Any]) -> Self:
        token = _READING.set(env)
        try:
            return super().from_values(values)
        finally:
            _READING.reset(token)


_READING: ContextVar[Mapping[str, str] | None] = ContextVar("_READING", default=None)
"""The variables :class:`Settings` reads while it is built; None: those of ``os.environ``."""


class _Variables(PydanticBaseSettingsSource):
    """The variables of a mapping that set a field of :class:`Settings` (by the field's alias),
    the warehouse's in a nested dict. An empty variable counts as unset."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.env = env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (self.env.get(field.alias) or None) if field.alias else None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return {**self._read(Settings), "warehouse": self._read(WarehouseSettings)}

    def _read(self, model: type[BaseModel]) -> dict[str, Any]:
        values = {}
        for name, field in model.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


def variables(env: Mapping[str, str]) -> dict[str, Any]:
    """The field values the variables of ``env`` give (unvalidated), the warehouse's in a
    nested dict: what :meth:`Settings.from_env` validates, and what the DAG completes with its
    Airflow connections."""
    return _Variables(Settings, env)()
