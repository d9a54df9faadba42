"""Amazon Redshift: ``COPY ... FROM 's3://...' MANIFEST`` with ``IAM_ROLE``; objects must be on
S3. Every way Redshift differs from PostgreSQL in the loaders is here, each with the part of
AWS's documentation it follows (Amazon Redshift Database Developer Guide, "DG" below).

- **COPY only through a manifest.** COPY from a plain S3 path reads every object whose key
  starts with it (DG, "COPY from Amazon S3": the path is a key prefix; "Using a manifest to
  specify data files": a manifest lists "all of the required files, and only the required
  files", each URL a full object path). Each entry is ``mandatory`` (COPY fails instead of
  skipping a vanished object) and carries its ``meta.content_length`` (DG, "COPY examples",
  "Using a manifest to specify data files"). Manifests go under ``manifests/``, outside the
  input prefix. One COPY per stream file (its rows must keep their file: COPY has no column
  for the source object), one COPY for all parts of an RDS snapshot.
- **Row counts from Redshift's load history.** The ledger's count of a COPY is
  ``pg_last_copy_count()`` (DG, "PG_LAST_COPY_COUNT": rows loaded by the session's last COPY);
  the per-file record of every COPY is ``sys_load_detail`` (``query_id = pg_last_copy_id()``;
  DG, "SYS_LOAD_DETAIL"; ``stl_load_commits`` on provisioned clusters).
- **LOCK** takes only table names, no mode (DG, "LOCK"): ``lock raw_meta.load_ledger``.
- **Sized text.** "Don't make it a practice to use the maximum column size" (DG, "Use the
  smallest possible column size"): the raw streams and ledger columns get sizes that fit their
  data (:data:`COLUMN_TYPES`). A value longer than its column cannot load: the file is refused
  with a reason that names the column, before any insert (the other warehouses keep it).
  ``raw_rds`` columns copy source tables of any width and stay ``varchar(65535)``, as does the
  temporary COPY table.
- **A sort key on raw_streams.streams** (``_load_seq``): every run reads only rows above the
  last staged load sequence (DG, "Choose the best sort key": columns of range filters).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from loaders.landing import LandedObject, LandingStore, is_gzip
from loaders.warehouse.csv_files import FileRejected
from loaders.warehouse.ledger import BUILDS_TABLE, LEDGER_TABLE, STREAMS_TABLE
from loaders.warehouse.postgres import PostgresWarehouse

MANIFEST_PREFIX = "manifests/"  # Redshift COPY manifests, outside the input prefix
MAX_VARCHAR = "varchar(65535)"
COLUMN_TYPES: dict[tuple[str, str], str] = {
    # stream values: the longest valid one (a 64-bit id with its sign, a timestamp with six
    # fractional digits and an offset) is far shorter; 256 bytes leaves room for padding
    (STREAMS_TABLE, "user_id"): "varchar(256)",
    (STREAMS_TABLE, "track_id"): "varchar(256)",
    (STREAMS_TABLE, "listen_time"): "varchar(256)",
    (STREAMS_TABLE, "_source_file"): "varchar(1024)",  # an S3 key is at most 1024 bytes
    (STREAMS_TABLE, "_load_id"): "varchar(256)",
    (LEDGER_TABLE, "object_key"): "varchar(1024)",
    (LEDGER_TABLE, "etag"): "varchar(128)",  # an MD5 or SHA-256 hex digest, with a part count
    (LEDGER_TABLE, "target_table"): "varchar(256)",
    (LEDGER_TABLE, "status"): "varchar(16)",
    (LEDGER_TABLE, "reason"): "varchar(4000)",  # 1000 characters of up to 4 bytes
    (LEDGER_TABLE, "load_id"): "varchar(256)",
    (BUILDS_TABLE, "load_id"): "varchar(256)",
}


class RedshiftWarehouse(PostgresWarehouse):
    """Amazon Redshift (see the module). No cluster is reachable where this project is
    developed: the statements are pinned by tests on the SQL this class sends."""

    text_type = MAX_VARCHAR

    def column_type(self, table: str, column: str) -> str:
        return COLUMN_TYPES.get((table, column), MAX_VARCHAR)

    def table_options(self, table: str) -> str:
        return " compound sortkey (_load_seq)" if table == STREAMS_TABLE else ""

    def _lock_ledger(self, cur: Any) -> None:
        cur.execute(f"lock {LEDGER_TABLE}")

    def copy_statement(self, manifest_uri: str, *, gzip_compressed: bool) -> str:
        """The COPY that loads the objects a manifest lists into ``_landing``."""
        options = [
            "format as csv",
            "ignoreheader 1",
            f"iam_role '{_quote(self.settings.iam_role)}'",
        ]
        if gzip_compressed:
            options.append("gzip")
        options.append("manifest")
        if self.settings.region:
            options.append(f"region '{_quote(self.settings.region)}'")
        return f"copy _landing from '{_quote(manifest_uri)}' " + " ".join(options)

    def _copy_to_temp(
        self, cur: Any, landing: LandingStore, objects: Sequence[LandedObject], n_columns: int
    ) -> str | None:
        uris = [landing.uri(obj.key) for obj in objects]
        if not all(uri.startswith("s3://") for uri in uris):
            raise ValueError("the redshift warehouse loads from S3: set MUSIC_ELT_LANDING=s3://...")
        cur.execute(
            "create temp table _landing ("
            + ", ".join(f"c{i} {MAX_VARCHAR}" for i in range(1, n_columns + 1))
            + ")"
        )
        keys = [obj.key for obj in objects]
        named = keys[0] if len(keys) == 1 else keys[0].rsplit("/", 1)[0] + "/copy"
        manifest_key = f"{MANIFEST_PREFIX}{named}.manifest"
        landing.write_text(manifest_key, redshift_manifest(objects, uris))
        cur.execute(
            self.copy_statement(landing.uri(manifest_key), gzip_compressed=is_gzip(keys[0]))
        )
        return None  # COPY from S3 keeps no order: no line numbers

    def _copied_rows(self, cur: Any) -> int:
        cur.execute("select pg_last_copy_count()")
        return int(cur.fetchone()[0])

    def _check_values(self, cur: Any, table: str, columns: dict[str, str]) -> None:
        sized = {
            raw: (copied, int(kind[len("varchar(") : -1]))
            for raw, copied in columns.items()
            if (kind := self.column_type(table, raw)) != MAX_VARCHAR
        }
        if not sized:
            return
        cur.execute(
            "select "
            + ", ".join(f"max(octet_length({copied}))" for copied, _ in sized.values())
            + " from _landing"
        )
        longest = cur.fetchone()
        for (raw, (_copied, size)), found in zip(sized.items(), longest, strict=True):
            if found is not None and int(found) > size:
                raise FileRejected(
                    f"a {raw} value is {int(found)} bytes long, longer than the {size} bytes "
                    f"{table}.{raw} holds on Redshift"
                )


def redshift_manifest(objects: Sequence[LandedObject], uris: Sequence[str]) -> str:
    """A COPY manifest listing every object by its exact URL, as mandatory, with its size."""
    entries = [
        {"url": uri, "mandatory": True, "meta": {"content_length": obj.size}}
        for obj, uri in zip(objects, uris, strict=True)
    ]
    return json.dumps({"entries": entries}, indent=2)


def _quote(text: str) -> str:
    return text.replace("'", "''")
