"""A connection to the warehouse: transactions, reads, and the few catalog questions the
ledger, the loaders and ``music-elt check`` ask (does this schema, table, column exist)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from loaders.config import WarehouseSettings


class Session(ABC):
    """A warehouse connection. Use as a context manager; it closes its connection."""

    text_type = "text"
    placeholder = "%s"

    def __init__(self, settings: WarehouseSettings) -> None:
        self.settings = settings
        self.conn: Any = None

    @abstractmethod
    def _connect(self) -> Any: ...

    def __enter__(self) -> Any:
        self.conn = self._connect()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor inside one transaction: committed on success, rolled back on any error."""
        cur = self.conn.cursor()
        try:
            yield cur
        except BaseException:
            self.conn.rollback()
            raise
        else:
            self.conn.commit()
        finally:
            cur.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query and return its rows."""
        with self.transaction() as cur:
            cur.execute(self._sql(sql), tuple(params))
            return list(cur.fetchall())

    def _sql(self, sql: str) -> str:
        return sql.replace("%s", self.placeholder) if self.placeholder != "%s" else sql

    def column_type(self, table: str, column: str) -> str:
        """The SQL type of a text column the loaders create (``table`` as ``schema.name``).
        Text of any length here; Redshift sizes each column (see its module)."""
        return self.text_type

    def _columns(self, cur: Any, schema: str, table: str) -> set[str]:
        """The column names of ``schema.table`` (empty when it does not exist)."""
        cur.execute(
            self._sql(
                "select column_name from information_schema.columns "
                "where table_schema = %s and table_name = %s"
            ),
            (schema, table),
        )
        return {str(name) for (name,) in cur.fetchall()}

    def _schema_exists(self, cur: Any, schema: str) -> bool:
        """Whether the schema exists, whatever the user's privileges on it (PostgreSQL's
        ``information_schema.schemata`` shows only schemas the user owns or holds a
        privilege on, so the catalog is asked)."""
        cur.execute("select count(*) from pg_namespace where nspname = %s", (schema,))
        return int(cur.fetchone()[0]) > 0

    def _count(self, cur: Any, table: str) -> int:
        cur.execute(f"select count(*) from {table}")
        return int(cur.fetchone()[0])
