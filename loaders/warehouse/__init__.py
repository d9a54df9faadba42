"""Warehouse loaders: land files in the raw schemas exactly once, with a ledger.

One interface, three implementations, one module each:

- :mod:`~loaders.warehouse.duckdb`: DuckDB reads the file itself (``read_csv``).
- :mod:`~loaders.warehouse.postgres`: PostgreSQL streams the object's bytes into
  ``COPY ... FROM STDIN``.
- :mod:`~loaders.warehouse.redshift`: Redshift runs ``COPY ... FROM 's3://...' MANIFEST`` with
  ``IAM_ROLE``; every Redshift difference lives there, beside the AWS documentation it follows.

The shared parts: :mod:`~loaders.warehouse.session` (connection, transactions, catalog),
:mod:`~loaders.warehouse.ledger` (raw schemas, the load ledger and the build log),
:mod:`~loaders.warehouse.csv_files` (header checks, why a file is refused),
:mod:`~loaders.warehouse.loading` (load groups, one transaction each) and
:mod:`~loaders.warehouse.reporting` (reads for the run summary and the demo).
"""

from __future__ import annotations

from loaders.config import Settings
from loaders.warehouse.csv_files import (
    MAX_LINE_BYTES,
    FileRejected,
    LineLimit,
    column_positions,
    long_line_reason,
    read_header,
    rejection_reason,
)
from loaders.warehouse.duckdb import DuckDBWarehouse
from loaders.warehouse.ledger import (
    BUILDS_TABLE,
    CURRENT_VERSION,
    LAST_GREEN_BUILD,
    LEDGER_TABLE,
    RAW_SCHEMAS,
    RDS_SCHEMA,
    STREAM_COLUMNS,
    STREAMS_TABLE,
    UNBUILT_LOADS,
    snapshot_table,
)
from loaders.warehouse.loading import LoadOutcome, Warehouse, physical_line
from loaders.warehouse.postgres import PostgresWarehouse
from loaders.warehouse.redshift import MANIFEST_PREFIX, RedshiftWarehouse, redshift_manifest

__all__ = [
    "BUILDS_TABLE",
    "CURRENT_VERSION",
    "LAST_GREEN_BUILD",
    "LEDGER_TABLE",
    "MANIFEST_PREFIX",
    "MAX_LINE_BYTES",
    "RAW_SCHEMAS",
    "RDS_SCHEMA",
    "STREAMS_TABLE",
    "STREAM_COLUMNS",
    "UNBUILT_LOADS",
    "DuckDBWarehouse",
    "FileRejected",
    "LineLimit",
    "LoadOutcome",
    "PostgresWarehouse",
    "RedshiftWarehouse",
    "Warehouse",
    "column_positions",
    "long_line_reason",
    "open_warehouse",
    "physical_line",
    "read_header",
    "redshift_manifest",
    "rejection_reason",
    "snapshot_table",
]


def open_warehouse(settings: Settings) -> Warehouse:
    """The warehouse implementation for ``settings.warehouse.kind`` (not yet connected)."""
    kinds: dict[str, type[Warehouse]] = {
        "duckdb": DuckDBWarehouse,
        "postgres": PostgresWarehouse,
        "redshift": RedshiftWarehouse,
    }
    return kinds[settings.warehouse.kind](settings.warehouse)
