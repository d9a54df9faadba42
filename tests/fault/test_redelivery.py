"""Re-delivered and corrupt stream files, through real ``music-elt run``s.

A correction (same key, other content, after the first version was loaded and archived)
replaces the earlier version in every mart, on DuckDB and PostgreSQL, with local and S3
landing; both versions stay archived under names of their own and both in raw, the earlier one
marked superseded; an identical re-delivery changes nothing; a full refresh equals the
incremental result. A truncated ``.csv.gz`` is quarantined with a reason and blocks nothing. A
correction delivered while ``dbt build`` runs is left for the next run.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loaders import pipeline
from loaders.config import Settings
from loaders.dbt import run_dbt
from tests.checks import (
    ARCHIVE,
    STREAMS,
    assert_no_problems,
    landing_objects,
    ledger_rows,
    mart_problems,
    published,
    query,
)
from tests.conftest import new_database
from tests.fault.conftest import make_stack
from tests.fault.harness import (
    Stack,
    condensed,
    dbt_halfway,
    no_traceback,
    postgres_warehouse_env,
)
from tests.kpi_reference import MARTS, assert_rows_match

pytestmark = [pytest.mark.fault, pytest.mark.slow]

# a file of its own on days no generated file touches: its correction moves every play of
# 2025-12-01 to 2025-12-02 (a day that vanishes) and changes tracks and users of others
SMALL_KEY = "streams/zz_correction.csv"
FIRST = (
    "user_id,track_id,listen_time\n"
    "1,{a},2025-12-01 08:15:00\n"
    "2,{a},2025-12-01 08:45:00\n"
    "3,{b},2025-12-03 21:00:00\n"
    "4,{b},2025-12-03 21:30:00\n"
)
CORRECTED = (
    "user_id,track_id,listen_time\n"
    "1,{a},2025-12-02 08:15:00\n"
    "2,{b},2025-12-02 08:45:00\n"
    "3,{b},2025-12-03 21:00:00\n"
    "5,{a},2025-12-03 21:30:00\n"
)


def corrected(original: bytes, stack: Stack) -> bytes:
    """A correction of a stream file: a third of its rows withdrawn, every fifth remaining
    play moved to another (known) track, five plays added on a day no other file covers."""
    reader = csv.DictReader(io.StringIO(original.decode()))
    fields = list(reader.fieldnames or ())
    rows = [row for i, row in enumerate(reader) if i % 3 != 1]
    with (stack.source / "songs.csv").open() as handle:
        track = next(csv.DictReader(handle))["track_id"]
    with (stack.source / "users.csv").open() as handle:
        users = [row["user_id"] for _, row in zip(range(5), csv.DictReader(handle), strict=False)]
    for i, row in enumerate(rows):
        if i % 5 == 0:
            row["track_id"] = track
    rows += [
        {**dict.fromkeys(fields, ""), "user_id": user, "track_id": track}
        | {"listen_time": f"2026-01-20 08:1{i}:00"}
        for i, user in enumerate(users)
    ]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    assert out.getvalue().encode() != original
    return out.getvalue().encode()


@pytest.fixture(params=["local", "s3", "postgres"])
def correction_stack(
    request: pytest.FixtureRequest, tmp_path: Path, generated: Path
) -> Iterator[Stack]:
    """A stack on DuckDB with a local or S3 landing zone, or on a PostgreSQL warehouse of its
    own with a local landing zone."""
    kind = "local" if request.param == "postgres" else str(request.param)
    stack = make_stack(request, tmp_path, generated, kind)
    if request.param == "postgres":
        stack.env |= postgres_warehouse_env(new_database(request.getfixturevalue("pg_server")))
    yield stack
    stack.stop_all()


def _marts(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for mart, spec in MARTS.items():
        rows = published(settings, f"select {', '.join(spec.columns)} from marts.{mart}")
        out[mart] = [dict(zip(spec.columns, row, strict=True)) for row in rows]
    return out


def test_a_corrected_redelivery_replaces_the_earlier_version(correction_stack: Stack) -> None:
    """The same key delivered again with other content, after the first version was loaded and
    archived, is a correction (the contract, "Re-delivered objects"). Two corrections in one
    run: a generated file (rows withdrawn, tracks changed, plays added on a new day) and a
    small file whose correction moves every play of 2025-12-01 to 2025-12-02. After the run:
    the marts equal the reference over the latest versions (the earlier one as if it never
    arrived) and the emptied day is gone; both versions of each are archived under distinct
    names and both are in raw, the earlier marked superseded in the ledger; the run summary
    names exactly the two corrected keys; an identical re-delivery of a third file changes
    nothing; a full refresh of the warehouse gives the same marts as the incremental runs."""
    stack = correction_stack
    with (stack.source / "songs.csv").open() as handle:
        a, b = (row["track_id"] for _, row in zip(range(2), csv.DictReader(handle), strict=False))
    files = stack.deliver_generated()
    small = stack.deliver(SMALL_KEY, FIRST.format(a=a, b=b).encode())
    stack.rerun()
    original = next(v for v in files if v.key.endswith(".csv"))
    stack.deliver(original.key, corrected(original.data, stack))
    stack.deliver(small.key, CORRECTED.format(a=a, b=b).encode())
    stack.deliver(files[1].key, files[1].data)  # the same content again: a no-op
    out = stack.run_ok()

    problems = []
    name = original.key.rsplit("/", 1)[1]
    if not any(re.search(r"(?i)supersed", line) and name in line for line in out.splitlines()):
        problems.append(
            f"the run summary names no superseded version of {name}:\n{condensed(out, 20)}"
        )
    named = sorted(re.findall(r"re-delivered (\S+): a correction", out))
    if named != sorted([original.key, small.key]):
        problems.append(f"the run summary names {named} as corrections:\n{condensed(out, 20)}")
    try:
        stack.assert_recovered()
    except AssertionError as exc:
        problems.append(str(exc))
    assert not problems, "\n".join(problems)

    settings = stack.settings
    incremental = _marts(settings)
    days = {row["listen_date"] for row in incremental["fct_genre_kpis_daily"]}
    assert str(min(days)) == "2025-12-02"  # the day the correction emptied is gone
    archived = [key for key in landing_objects(settings, ARCHIVE) if "zz_correction" in key]
    assert len(archived) == 2 and len(set(archived)) == 2
    versions = query(
        settings,
        "select superseded_at is not null from raw_meta.load_ledger "
        f"where object_key = '{small.key}' order by loaded_at",
    )
    assert [flag for (flag,) in versions] == [True, False]
    raw = query(
        settings,
        f"select count(*) from raw_streams.streams where _source_file = '{small.key}'",
    )
    assert raw == [(8,)]

    run_dbt(settings, ["build", "--full-refresh"])
    refreshed = _marts(settings)
    for mart, spec in MARTS.items():
        assert_rows_match(
            incremental[mart],
            refreshed[mart],
            key=spec.key,
            columns=spec.columns,
            rel_tol=1e-12,
            label=f"full refresh of {mart}",
        )


def test_a_truncated_gzip_is_quarantined_and_does_not_block_the_pipeline(
    local_stack: Stack,
) -> None:
    """A truncated ``.csv.gz`` is bad data, not an outage: it is quarantined with a reason
    saying what is wrong, the run exits 0 without a traceback with every other file loaded,
    and the next run (with a new file) recovers."""
    stack = local_stack
    files = stack.deliver_generated()
    gz = next(v for v in files if v.key.endswith(".csv.gz"))
    broken = stack.deliver("streams/truncated-upload.csv.gz", gz.data[: len(gz.data) * 2 // 3])
    run = stack.start()
    code, out, err = run.finish()
    assert code == 0, f"exit {code}, expected 0:\n{err[-3000:]}"
    no_traceback(out, err)
    ledger = [row for row in ledger_rows(stack.settings) if row["object_key"] == broken.key]
    assert [row["status"] for row in ledger] == ["rejected"], ledger
    assert re.search(r"(?i)gzip|truncat|corrupt|compress|end of|eof", ledger[0]["reason"] or "")

    stack.deliver(
        "streams/after-the-broken-one.csv",
        b"user_id,track_id,listen_time\n1,late-track,2026-01-06 23:59:59\n",
    )
    stack.rerun()
    stack.assert_recovered()


def test_a_correction_delivered_during_the_build_is_left_for_the_next_run(stack: Stack) -> None:
    """The producer replaces a file while `dbt build` runs: the run exits 0, archives nothing
    holding the new bytes, leaves the new version at its key and says so; the next run loads
    it as a correction and archives it; the marts equal the reference over the latest versions.
    (The loaded bytes themselves are gone from landing, overwritten by the producer: raw keeps
    them.)"""
    files = stack.deliver_generated()
    original = next(v for v in files if v.key.endswith(".csv"))
    run = stack.start()
    run.wait_for(dbt_halfway, timeout=120)
    new = stack.deliver(original.key, corrected(original.data, stack))
    code, out, err = run.finish()
    assert code == 0, f"{condensed(out)}\n{err}"
    no_traceback(out, err)
    assert any(
        "left for the next run" in line and original.key in line for line in out.splitlines()
    )
    landing = pipeline.landing_store(stack.settings)
    with landing.open(original.key) as still_there:
        assert still_there.read() == new.data  # the new version waits at its key
    # the bytes the run loaded were overwritten at the key by the producer, so only raw keeps
    # them; nothing the run moved holds the new bytes
    assert not [
        data for data in landing_objects(stack.settings, ARCHIVE).values() if data == new.data
    ]

    stack.rerun()
    settings = stack.settings
    assert_no_problems(mart_problems(stack.reference(), settings), "after the next run")
    assert not landing_objects(settings, STREAMS)
    archived = landing_objects(settings, ARCHIVE)
    assert [key for key, data in archived.items() if data == new.data], (
        "the correction not archived"
    )
