"""The embedded default: a DuckDB file, one writer at a time. DuckDB reads each file itself
(``read_csv``); an object on S3 is first streamed to a local temporary file, since the httpfs
extension cannot be installed offline."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loaders.errors import ServiceOutage, one_line
from loaders.landing import LandedObject, LandingStore, is_gzip
from loaders.warehouse.csv_files import MAX_LINE_BYTES
from loaders.warehouse.loading import Warehouse


class DuckDBWarehouse(Warehouse):
    """The embedded default: a DuckDB file, one writer at a time."""

    placeholder = "?"

    def _connect(self) -> Any:
        import duckdb

        path = self.settings.duckdb_path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # memory limit, threads, spill directory: the same config dbt-duckdb opens with
            return duckdb.connect(str(path), config={**self.settings.duckdb_settings()})
        except duckdb.IOException as exc:
            raise ServiceOutage(
                f"cannot open the DuckDB warehouse {path}: {one_line(exc)} "
                "(another process, such as a dbt run, may be writing it)"
            ) from None

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        # A DuckDB cursor is a second connection with its own transactions: use the connection.
        self.conn.execute("begin transaction")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("rollback")
            raise
        else:
            self.conn.execute("commit")

    def _schema_exists(self, cur: Any, schema: str) -> bool:
        cur.execute(
            "select count(*) from information_schema.schemata where schema_name = ?", (schema,)
        )
        return int(cur.fetchone()[0]) > 0

    def _lock_ledger(self, cur: Any) -> None:
        """DuckDB allows one writing process, which is this one."""

    def _copy_to_temp(
        self, cur: Any, landing: LandingStore, objects: Sequence[LandedObject], n_columns: int
    ) -> str | None:
        keys = [obj.key for obj in objects]
        columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(1, n_columns + 1)) + "}"
        compression = "gzip" if is_gzip(keys[0]) else "none"
        with _safely_named_copies(landing, keys) as paths:
            cur.execute(
                "create temp table _landing as select * from read_csv(?, header = true, "
                f"auto_detect = false, columns = {columns}, delim = ',', quote = '\"', "
                "escape = '\"', strict_mode = true, null_padding = false, "
                f"compression = '{compression}', max_line_size = {MAX_LINE_BYTES})",
                ([str(p) for p in paths],),
            )
        return "rowid"  # the temporary table keeps the file's row order (rowids follow it)


@contextmanager
def _safely_named_copies(landing: LandingStore, keys: list[str]) -> Iterator[list[Path]]:
    """Local paths for the objects under names of digits only (``00000.csv``), so that DuckDB,
    which expands glob patterns in the paths it reads (``*``, ``?``, ``[ab]``, ``{a,b}``),
    reads each object from its own bytes: a symbolic link to a file of a local zone (DuckDB
    sees only the link's name; the kernel follows it), else the object's bytes streamed from the
    store into a temporary file."""
    with tempfile.TemporaryDirectory(prefix="music-elt-") as tmp:
        paths = []
        for i, key in enumerate(keys):
            path = Path(tmp, f"{i:05d}.csv")
            source = landing.local_path(key)
            if source is not None:
                path.symlink_to(source)
            else:
                with landing.open(key) as src, path.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            paths.append(path)
        yield paths
