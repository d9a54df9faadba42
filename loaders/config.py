"""Settings for a pipeline run, built once from the environment and validated on construction.

Every secret comes from the environment (or, under Airflow, from a connection turned into the
same fields); nothing here is ever logged with its password. See the README's configuration
table for the meaning of each variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

WAREHOUSE_KINDS = ("duckdb", "postgres", "redshift")
DEFAULT_WORKDIR = Path(".music-elt")
DEFAULT_RDS_TABLES = ("users", "songs")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_identifier(name: str, what: str) -> str:
    """Return ``name`` if it is a plain lower-case SQL identifier, else raise ConfigError."""
    if not _IDENT.fullmatch(name):
        raise ConfigError(
            f"{what} {name!r} is not a plain identifier (lower-case letters, digits, underscore)"
        )
    return name


def redact(dsn: str) -> str:
    """A DSN or URL with any password replaced by ``***``, safe to print."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urlunsplit(parts._replace(netloc=netloc))
        return dsn
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", dsn)


@dataclass(frozen=True)
class WarehouseSettings:
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
        if self.kind == "redshift" and not self.iam_role:
            raise ConfigError("the redshift warehouse needs MUSIC_ELT_REDSHIFT_IAM_ROLE for COPY")

    def dbt_env(self) -> dict[str, str]:
        """Environment variables that ``dbt_project/profiles.yml`` reads for this warehouse."""
        env = {"MUSIC_ELT_TARGET": self.kind}
        if self.kind == "duckdb":
            env["MUSIC_ELT_DUCKDB_PATH"] = str(self.duckdb_path.resolve())
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
class Settings:
    """Everything one pipeline run needs. Build it with :meth:`from_env`."""

    workdir: Path = DEFAULT_WORKDIR
    rds_dsn: str = field(default="", repr=False)  # empty: the embedded pgserver in the workdir
    rds_tables: tuple[str, ...] = DEFAULT_RDS_TABLES
    batch_size: int = 50_000
    landing_url: str = ""  # empty: <workdir>/landing; or s3://bucket/prefix
    s3_endpoint_url: str = ""
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    dbt_project_dir: Path = DEFAULT_DBT_PROJECT_DIR
    dbt_threads: int = 1
    dbt_manifest: Path | None = None  # the DAG's pre-built manifest; default: the last build's

    def __post_init__(self) -> None:
        for table in self.rds_tables:
            check_identifier(table, "RDS table")
        if self.batch_size < 1:
            raise ConfigError(f"MUSIC_ELT_BATCH_SIZE must be positive, got {self.batch_size}")
        if self.landing_url and not (
            self.landing_url.startswith("s3://") or "://" not in self.landing_url
        ):
            raise ConfigError(
                f"MUSIC_ELT_LANDING={self.landing_url!r}: use s3://bucket/prefix or a local path"
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
        return replace(self, workdir=workdir, warehouse=warehouse)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, workdir: Path | None = None
    ) -> Settings:
        """Build settings from ``MUSIC_ELT_*`` and ``WAREHOUSE_*`` variables.

        ``workdir`` (the CLI's ``--workdir``) wins over ``MUSIC_ELT_WORKDIR``.
        """
        env = os.environ if env is None else env
        work = workdir or Path(env.get("MUSIC_ELT_WORKDIR") or DEFAULT_WORKDIR)
        kind = env.get("MUSIC_ELT_TARGET", "duckdb")
        try:
            port = int(env.get("WAREHOUSE_PORT") or (5439 if kind == "redshift" else 5432))
            batch_size = int(env.get("MUSIC_ELT_BATCH_SIZE", "50000"))
            threads = int(env.get("MUSIC_ELT_DBT_THREADS", "1"))
        except ValueError as exc:
            raise ConfigError(f"a numeric setting is not a number: {exc}") from None
        warehouse = WarehouseSettings(
            kind=kind,
            duckdb_path=Path(env.get("MUSIC_ELT_DUCKDB_PATH") or work / "warehouse.duckdb"),
            host=env.get("WAREHOUSE_HOST", "localhost"),
            port=port,
            user=env.get("WAREHOUSE_USER", ""),
            password=env.get("WAREHOUSE_PASSWORD", ""),
            dbname=env.get("WAREHOUSE_DBNAME", ""),
            iam_role=env.get("MUSIC_ELT_REDSHIFT_IAM_ROLE", ""),
            region=env.get("MUSIC_ELT_REDSHIFT_REGION", ""),
        )
        tables = tuple(
            t.strip() for t in env.get("MUSIC_ELT_RDS_TABLES", "users,songs").split(",") if t
        )
        return cls(
            workdir=work,
            rds_dsn=env.get("MUSIC_ELT_RDS_DSN", ""),
            rds_tables=tables,
            batch_size=batch_size,
            landing_url=env.get("MUSIC_ELT_LANDING", ""),
            s3_endpoint_url=env.get("MUSIC_ELT_S3_ENDPOINT_URL", ""),
            warehouse=warehouse,
            dbt_project_dir=Path(env.get("MUSIC_ELT_DBT_PROJECT_DIR") or DEFAULT_DBT_PROJECT_DIR),
            dbt_threads=threads,
            dbt_manifest=Path(env["MUSIC_ELT_DBT_MANIFEST"])
            if env.get("MUSIC_ELT_DBT_MANIFEST")
            else None,
        )
