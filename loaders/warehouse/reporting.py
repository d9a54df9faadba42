"""Reads for the run's summary and the demo: row counts, previews, rejected rows by reason and
the effect of a correction. Relations and columns come from the dbt manifest and are checked
as plain identifiers before they reach SQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loaders.config import ConfigError, check_identifier
from loaders.warehouse.ledger import LEDGER_TABLE
from loaders.warehouse.session import Session


def split_relation(relation: str) -> tuple[str, str]:
    """``schema.name`` as its two checked identifiers."""
    schema, _, name = relation.partition(".")
    return check_identifier(schema, "schema"), check_identifier(name, "relation")


class Reporting(Session):
    """Read-only questions about built relations."""

    def exists(self, schema: str, name: str) -> bool:
        """Whether the table or view ``schema.name`` exists."""
        with self.transaction() as cur:
            cur.execute(
                self._sql(
                    "select count(*) from information_schema.tables "
                    "where table_schema = %s and table_name = %s"
                ),
                (schema, name),
            )
            return int(cur.fetchone()[0]) > 0

    def row_counts(self, relations: Sequence[str]) -> dict[str, int]:
        """Rows in each relation (``schema.name``, as named by the dbt manifest); 0 for one
        that does not exist yet."""
        counts = {}
        for relation in relations:
            schema, name = split_relation(relation)
            exists = self.exists(schema, name)
            counts[relation] = (
                int(self.query(f"select count(*) from {schema}.{name}")[0][0]) if exists else 0
            )
        return counts

    def preview(
        self,
        relation: str,
        *,
        columns: Sequence[str] = (),
        order_by: str = "",
        latest: str = "",
        limit: int = 8,
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and the first ``limit`` rows of ``relation`` (``columns``, else all) in
        ``order_by`` order (``"col [desc], ..."``), only those of its latest ``latest`` value
        when given."""
        schema, name = split_relation(relation)
        picked = ", ".join(check_identifier(c, "column") for c in columns) or "*"
        terms = []
        for term in filter(None, (t.strip() for t in order_by.split(","))):
            column, _, direction = term.partition(" ")
            if direction.strip().lower() not in ("", "asc", "desc"):
                raise ConfigError(f"preview order {term!r} of {relation} is not 'column [desc]'")
            terms.append(f"{check_identifier(column, 'column')} {direction.strip().lower()}")
        sql = f"select {picked} from {schema}.{name}"
        if latest:
            column = check_identifier(latest, "column")
            sql += f" where {column} = (select max({column}) from {schema}.{name})"
        if terms:
            sql += " order by " + ", ".join(terms)
        sql += f" limit {int(limit)}"
        with self.transaction() as cur:
            cur.execute(sql)
            names = [d[0] for d in cur.description]
            return names, list(cur.fetchall())

    def rejected_rows_by_reason(self, relation: str, load_id: str) -> dict[str, int]:
        """Rows of one load that the cleaning rules rejected (dbt's rejects mart), by reason."""
        schema, name = split_relation(relation)
        if not self.exists(schema, name):
            return {}
        rows = self.query(
            f"select reject_reason, count(*) from {schema}.{name} "
            "where load_id = %s group by reject_reason order by reject_reason",
            (load_id,),
        )
        return {str(reason): int(n) for reason, n in rows}

    def correction_effect(self, staged: str, key: str, load_id: str) -> tuple[int, int] | None:
        """What the version of ``key`` loaded by ``load_id`` changed against the version it
        superseded: the kept plays (user, track, UTC time, after the cleaning rules) found only
        in the new version and only in the old one, read from the staged rows (``staged``, the
        dbt staging model) of those two versions. None when either version is not there."""
        schema, name = split_relation(staged)
        (new_seq,) = self.query(
            f"select max(load_seq) from {LEDGER_TABLE} where object_key = %s "
            "and load_id = %s and status = 'loaded'",
            (key, load_id),
        )[0]
        if new_seq is None:
            return None
        (old_seq,) = self.query(
            f"select max(load_seq) from {LEDGER_TABLE} where object_key = %s "
            "and status = 'loaded' and superseded_seq = %s",
            (key, new_seq),
        )[0]
        if old_seq is None or not self.exists(schema, name):
            return None
        added, removed = self.query(
            "select coalesce(sum(case when in_new = 1 and in_old = 0 then 1 else 0 end), 0), "
            "coalesce(sum(case when in_old = 1 and in_new = 0 then 1 else 0 end), 0) from ("
            "select user_id, track_id, listen_time, "
            "max(case when _load_seq = %s then 1 else 0 end) as in_new, "
            "max(case when _load_seq = %s then 1 else 0 end) as in_old "
            f"from {schema}.{name} where _source_file = %s and reject_reason is null "
            "and _load_seq in (%s, %s) group by user_id, track_id, listen_time) as plays",
            (new_seq, old_seq, key, new_seq, old_seq),
        )[0]
        return int(added), int(removed)
