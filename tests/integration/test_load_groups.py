"""Load groups on a real PostgreSQL, the code path Redshift shares (a group is one transaction;
only the COPY differs): commits grow with groups, not files, and a refused file rolls its
group back without losing the others. The connection is the real one, wrapped to count what
is sent; the counts for 50 files are printed (``-s``) for the README's figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loaders import pipeline
from loaders.config import Settings
from loaders.landing import LandedObject
from tests.conftest import postgres_settings

GOOD = "user_id,track_id,listen_time\n1,t1,2026-01-05 09:00:00\n2,t2,2026-01-05 10:00:00\n"


class _Counting:
    """The real psycopg2 connection, counting commits, statements and COPYs."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.commits = self.statements = self.copies = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def commit(self) -> None:
        self.commits += 1
        self._conn.commit()

    def cursor(self) -> Any:
        outer, cur = self, self._conn.cursor()

        class Cursor:
            def __getattr__(self, name: str) -> Any:
                return getattr(cur, name)

            def execute(self, sql: str, params: Any = None) -> None:
                outer.statements += 1
                cur.execute(sql, params)

            def copy_expert(self, sql: str, stream: Any, size: int = 8192) -> None:
                outer.statements += 1
                outer.copies += 1
                cur.copy_expert(sql, stream, size=size)

            def __enter__(self) -> Any:
                return self

            def __exit__(self, *exc: object) -> None:
                cur.close()

        return Cursor()


def _deliver(
    settings: Settings, tmp_path: Path, n: int, bad: frozenset[int] = frozenset()
) -> list[Any]:
    landing = pipeline.landing_store(settings)
    for i in range(n):
        path = tmp_path / f"f{i:03d}.csv"
        path.write_text(GOOD if i not in bad else 'user_id,track_id,listen_time\n1,"t\n')
        landing.put(f"streams/f{i:03d}.csv", path)
    return landing.list("streams/")


def _load(settings: Settings, objects: list[LandedObject], per_group: int) -> tuple[Any, list[Any]]:
    landing = pipeline.landing_store(settings)
    with pipeline.warehouse(settings) as wh:
        counting = wh.conn = _Counting(wh.conn)
        outcomes = []
        for start in range(0, len(objects), per_group):
            outcomes += wh.load_stream_files(
                landing,
                objects[start : start + per_group],
                load_id="r",
                loaded_at=pipeline.utcnow(),
            )
    return counting, outcomes


@pytest.mark.parametrize("per_group", [1, 25])
def test_commits_follow_groups_not_files(
    per_group: int, settings: Settings, pg_database: dict[str, Any], tmp_path: Path
) -> None:
    pg = postgres_settings(settings, pg_database)
    objects = _deliver(pg, tmp_path, 50)
    counting, outcomes = _load(pg, objects, per_group)
    assert [o.status for o in outcomes] == ["loaded"] * 50
    groups = -(-50 // per_group)
    assert counting.commits == groups
    assert counting.copies == 50  # one COPY per file: each row keeps its file
    per_file = (counting.statements - 1 * groups) / 50  # the LOCK once per group
    print(
        f"\n50 files, {per_group} per group: {counting.commits} commits, "
        f"{counting.statements} statements ({per_file:.0f} per file), {counting.copies} COPYs "
        f"of {objects[0].size} bytes each"
    )
    assert per_file == 10


def test_a_refused_file_rolls_its_group_back_and_the_others_load(
    settings: Settings, pg_database: dict[str, Any], tmp_path: Path
) -> None:
    pg = postgres_settings(settings, pg_database)
    objects = _deliver(pg, tmp_path, 5, bad={2})
    counting, outcomes = _load(pg, objects, 5)
    assert [o.status for o in outcomes] == ["loaded", "loaded", "rejected", "loaded", "loaded"]
    assert "not loadable as CSV" in outcomes[2].reason
    assert counting.commits == 1  # the first try rolled back; the second committed the four
    with pipeline.warehouse(pg) as wh:
        ledger = wh.query("select object_key, row_count from raw_meta.load_ledger order by 1")
        rows = wh.query("select count(*) from raw_streams.streams")[0][0]
    assert ledger == [(o.key, 2) for i, o in enumerate(objects) if i != 2]
    assert rows == 8
