"""PostgreSQL: each object's bytes stream from the landing zone into ``COPY ... FROM STDIN``."""

from __future__ import annotations

import gzip
import os
import socket
from collections.abc import Sequence
from typing import Any

from loaders.errors import ServiceOutage, one_line
from loaders.landing import LandedObject, LandingStore, is_gzip
from loaders.warehouse.csv_files import MAX_LINE_BYTES, LineLimit
from loaders.warehouse.loading import Warehouse


class PostgresWarehouse(Warehouse):
    """A PostgreSQL warehouse: object bytes stream into COPY ... FROM STDIN."""

    def _connect(self) -> Any:
        import psycopg2

        s = self.settings
        try:
            return psycopg2.connect(
                host=s.host,
                port=s.port,
                user=s.user,
                password=s.password,
                dbname=s.dbname,
                connect_timeout=15,
                application_name=f"music-elt pid {os.getpid()}@{socket.gethostname()}"[:63],
            )
        except psycopg2.OperationalError as exc:
            raise ServiceOutage(
                f"cannot reach the {s.kind} warehouse {s.user}@{s.host}:{s.port}/{s.dbname}: "
                f"{one_line(exc)}"
            ) from None

    def _copy_to_temp(
        self, cur: Any, landing: LandingStore, objects: Sequence[LandedObject], n_columns: int
    ) -> str | None:
        columns = ", ".join(f"c{i}" for i in range(1, n_columns + 1))
        cur.execute(
            "create temp table _landing (_n bigint generated always as identity, "
            + ", ".join(f"c{i} text" for i in range(1, n_columns + 1))
            + ")"
        )
        for obj in objects:
            with landing.open(obj.key) as raw:
                stream: Any = gzip.GzipFile(fileobj=raw) if is_gzip(obj.key) else raw
                limited = LineLimit(stream, MAX_LINE_BYTES)
                try:
                    cur.copy_expert(
                        f"copy _landing ({columns}) from stdin with (format csv, header true)",
                        limited,
                        size=1 << 20,
                    )
                except Exception:
                    if limited.error is not None:  # psycopg2 wraps what read() raised in a
                        raise limited.error from None  # QueryCanceledError: classify the cause
                    raise
        return "_n"  # the identity follows the input order
