"""What a finished run must leave behind, checked from the outside: the landing zone's
objects, the load ledger, raw row counts and the marts against tests/kpi_reference.py.

Shared by the bad-input corpus (tests/e2e) and the fault-injection suite (tests/fault). Every
check reads what an operator can see (objects in landing, rows in the warehouse) and makes
as few assumptions as possible about how the product names things it is free to name: an
archived or quarantined object is found by its bytes and by the original file name's stem in
its key, a superseded version by whichever marker the ledger carries.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from loaders import pipeline
from loaders.config import Settings
from loaders.warehouse import open_warehouse
from tests.kpi_reference import MARTS, KpiResult, assert_rows_match, diff_rows

STREAMS = "streams/"
ARCHIVE = "archive/"
QUARANTINE = "quarantine/"
REASON_SUFFIX = ".reason.txt"
LEDGER = "raw_meta.load_ledger"
RAW_STREAMS = "raw_streams.streams"
# The ways a ledger may mark a superseded version (as dashboard/kpis.py reads them).
SUPERSEDED_STATUS = "superseded"
SUPERSEDED_MARKERS = ("superseded_at", "superseded_by", "superseded_by_etag")
SUPERSEDED_FLAGS = ("is_superseded", "superseded")


def md5(data: bytes) -> str:
    """The etag of a single-part object (S3 and the local landing zone agree)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def stem(key: str) -> str:
    """A file's name without its directory and its .csv / .csv.gz suffix."""
    name = PurePosixPath(key).name
    for suffix in (".csv.gz", ".csv"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class Version:
    """One delivered version of a stream object."""

    key: str  # streams/...
    data: bytes

    @property
    def etag(self) -> str:
        return md5(self.data)

    @property
    def rows(self) -> int:
        """Its CSV data rows, as the reference reads them (none for an unloadable file)."""
        from tests.kpi_reference import Delivery, _file_problem, _stream_rows

        delivery = Delivery(self.key, self.data)
        if _file_problem(delivery) is not None:
            return 0
        return sum(1 for _ in _stream_rows(delivery))


def landing_objects(settings: Settings, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` with its bytes."""
    landing = pipeline.landing_store(settings)
    out = {}
    for obj in landing.list(prefix):
        with landing.open(obj.key) as handle:
            out[obj.key] = handle.read()
    return out


def query(settings: Settings, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with open_warehouse(settings) as wh:
        return wh.query(sql, params)


def published(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query over what readers see: the published marts (the DuckDB serving copy, or
    the warehouse's published relations), never dbt's build relations."""
    from loaders.serving import open_reader

    return open_reader(settings).query(sql)


def ledger_rows(settings: Settings) -> list[dict[str, Any]]:
    """The ledger's stream rows as dicts (every column it has, whatever this version adds)."""
    with open_warehouse(settings) as wh, wh.transaction() as cur:
        cur.execute(f"select * from {LEDGER} where object_key like 'streams/%'")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def is_superseded(row: Mapping[str, Any]) -> bool:
    """Whether a ledger row marks its version superseded, in any of the ways a ledger may."""
    return (
        row.get("status") == SUPERSEDED_STATUS
        or any(row.get(column) is not None for column in SUPERSEDED_MARKERS)
        or any(bool(row.get(column)) for column in SUPERSEDED_FLAGS)
    )


def raw_rows_by_file(settings: Settings) -> Counter[str]:
    return Counter(
        {
            str(key): int(n)
            for key, n in query(
                settings, f"select _source_file, count(*) from {RAW_STREAMS} group by 1"
            )
        }
    )


def assert_marts_match(expected: KpiResult, settings: Settings) -> None:
    """Each KPI mart equals the reference."""
    for mart, spec in MARTS.items():
        rows = published(settings, f"select {', '.join(spec.columns)} from marts.{mart}")
        assert_rows_match(
            expected.rows(mart), rows, key=spec.key, columns=spec.columns, label=f"marts.{mart}"
        )


def mart_problems(expected: KpiResult, settings: Settings, limit: int = 6) -> list[str]:
    """How each KPI mart differs from the reference (the first ``limit`` differences each)."""
    problems = []
    for mart, spec in MARTS.items():
        rows = published(settings, f"select {', '.join(spec.columns)} from marts.{mart}")
        found = diff_rows(
            expected.rows(mart), rows, key=spec.key, columns=spec.columns, limit=limit
        )
        problems += [f"marts.{mart}: {problem}" for problem in found]
    return problems


def find_by_content(
    objects: Mapping[str, bytes], version: Version, *, skip_reasons: bool = True
) -> list[str]:
    """Keys of ``objects`` that hold ``version``'s bytes under a name that still says which
    file it was: the original stem in the object's name. (So the file names of one test must
    not contain each other's stems.)"""
    return sorted(
        key
        for key, data in objects.items()
        if data == version.data
        and stem(version.key) in PurePosixPath(key).name
        and not (skip_reasons and key.endswith(REASON_SUFFIX))
    )


def ledger_problems(
    settings: Settings,
    loaded: Iterable[Version],
    quarantined: Iterable[Version] = (),
    superseded: Iterable[Version] = (),
) -> list[str]:
    """The ledger holds each file version once: loaded versions with their row count,
    quarantined ones with status 'rejected', superseded ones marked so."""
    rows = ledger_rows(settings)
    by_version: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        by_version.setdefault((row["object_key"], row["etag"]), []).append(row)
    problems = []
    expected: set[tuple[str, str]] = set()
    old = {(v.key, v.etag) for v in superseded}
    for kind, versions in (("loaded", loaded), ("rejected", quarantined)):
        for version in versions:
            ident = (version.key, version.etag)
            expected.add(ident)
            found = by_version.get(ident, [])
            if len(found) != 1:
                problems.append(
                    f"ledger: {len(found)} rows for {version.key} (etag {version.etag}), "
                    f"expected 1: {found}"
                )
                continue
            row = found[0]
            if ident in old:
                if not is_superseded(row):
                    problems.append(f"ledger: {version.key} {version.etag} not marked superseded")
            elif row["status"] != kind:
                problems.append(f"ledger: {version.key} status {row['status']!r}, not {kind!r}")
            elif is_superseded(row):
                problems.append(f"ledger: current version of {version.key} marked superseded")
            if kind == "loaded" and int(row["row_count"]) != version.rows:
                problems.append(
                    f"ledger: {version.key} row_count {row['row_count']}, file has {version.rows}"
                )
    extra = sorted(set(by_version) - expected)
    if extra:
        problems.append(f"ledger: rows for versions never delivered: {extra}")
    return problems


def landing_problems(
    settings: Settings,
    loaded: Iterable[Version],
    quarantined: Iterable[Version] = (),
    skipped: Iterable[Version] = (),
) -> list[str]:
    """Each loaded version archived exactly once and each refused one quarantined exactly once
    (with a reason beside it), none left in the input prefix but the ``skipped`` ones (not
    stream files: left where they are, untouched), nothing else archived."""
    archive = landing_objects(settings, ARCHIVE)
    quarantine = landing_objects(settings, QUARANTINE)
    streams = landing_objects(settings, STREAMS)
    stay = {version.key: version.data for version in skipped}
    left = sorted(key for key in streams if key not in stay)
    problems = [f"left in {STREAMS}: {left}"] if left else []
    problems += [
        f"skipped {key} was moved or changed"
        for key, data in stay.items()
        if streams.get(key) != data
    ]
    loaded, quarantined = list(loaded), list(quarantined)
    for version in loaded:
        found = find_by_content(archive, version)
        if len(found) != 1:
            problems.append(
                f"archive: {len(found)} copies of {version.key} (etag {version.etag}): {found}"
            )
        if find_by_content(quarantine, version):
            problems.append(f"quarantine: loaded file {version.key} is also quarantined")
    for version in quarantined:
        found = find_by_content(quarantine, version)
        if len(found) != 1:
            problems.append(f"quarantine: {len(found)} copies of {version.key}: {found}")
        elif found[0] + REASON_SUFFIX not in quarantine:
            problems.append(f"quarantine: no {found[0]}{REASON_SUFFIX}")
        if find_by_content(archive, version):
            problems.append(f"archive: refused file {version.key} was archived")
    archived_files = [key for key in archive if not key.endswith(REASON_SUFFIX)]
    if len(archived_files) != len(loaded):
        problems.append(
            f"archive holds {len(archived_files)} objects for {len(loaded)} loaded versions: "
            f"{sorted(archived_files)}"
        )
    return problems


def raw_problems(settings: Settings, versions: Iterable[Version]) -> list[str]:
    """Raw rows per file equal the rows of every version of it that was loaded."""
    expected: Counter[str] = Counter()
    for version in versions:
        expected[version.key] += version.rows
    actual = raw_rows_by_file(settings)
    return [
        f"raw: {key} has {actual.get(key, 0)} rows, its versions have {expected.get(key, 0)}"
        for key in sorted(set(expected) | set(actual))
        if actual.get(key, 0) != expected.get(key, 0)
    ]


def assert_no_problems(problems: Sequence[str], what: str) -> None:
    assert not problems, f"{what}:\n  " + "\n  ".join(problems)
