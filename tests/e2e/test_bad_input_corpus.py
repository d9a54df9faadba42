"""A bad-input corpus, table-driven, through the real pipeline (`music-elt seed` for the RDS,
files written straight into landing as producers write them, `music-elt run`).

Each case states what a person must find afterwards:

- **row cases** (one value form each, the contract's "Exact value formats"): the play is kept, with
  the user id and UTC time the contract gives, or rejected with the reason that must appear in
  ``marts.fct_rejected_listens.reject_reason`` at the row's physical line;
- **file cases** (BOM, latin-1, quoted comma/newline, header only, zero bytes, binary junk,
  semicolons, a missing column, a duplicated column, CRLF, 1 MB and 20 MB values, a line over
  64 MiB, odd names, names that are glob patterns beside the names they match, a newline in a
  name, upper-case suffixes): the file is loaded (that many rows in raw, archived once) or
  quarantined with a reason (in the ledger and the ``.reason.txt``), never both, never left
  behind; keys that are not stream files (another extension, hidden and marker names) are
  skipped: named in the run's output with the reason, never loaded, left in place (the
  contract's "Keys and files");
- **re-deliveries**: a loaded file re-uploaded truncated (quarantined, supersedes nothing, the
  run warns) and one corrected (a correction, reported with the plays it added and removed).

All row cases go through one run, all file cases through another (on DuckDB and PostgreSQL,
local landing zone and S3), the re-deliveries through two. Each run also checks counts in
equal counts out (raw rows = kept + rejected + duplicates), the marts against
tests/kpi_reference.py, and every file loaded or quarantined exactly once. The expectations
themselves are checked against the reference in a fast test, so the table and the oracle
cannot drift apart.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from loaders import pipeline
from loaders.cli import main as cli
from loaders.config import Settings
from loaders.landing import S3Landing
from tests.checks import (
    QUARANTINE,
    REASON_SUFFIX,
    Version,
    assert_marts_match,
    assert_no_problems,
    find_by_content,
    landing_objects,
    landing_problems,
    ledger_problems,
    ledger_rows,
    query,
    raw_problems,
)
from tests.kpi_reference import (
    Delivery,
    clean,
    compute_kpis,
    parse_listen_time,
    parse_user_id,
)

USERS = (
    "user_id,user_name,user_age,user_country,created_at\n"
    "7,Ann,30,DE,2024-01-01\n-5,Bo,41,SE,2024-01-01\n42,Cy,25,FR,2024-01-01\n"
)
SONGS = (
    "track_id,artists,album_name,track_name,popularity,duration_ms,track_genre\n"
    "t1,Zed;alpha,A,One,50,200000,pop\n"
    "t2,Beta,B,Two,70,100000,rock\n"
)
KEPT = "kept"
T0 = "2024-02-29 10:00:00"
MAX_INT64 = "9223372036854775807"


# --- row cases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowCase:
    """One stream row: its raw ``user_id`` and ``listen_time`` and what must become of it.
    Kept rows name the ``user`` and ``utc`` time (naive UTC) the marts must hold."""

    label: str
    user_id: str
    listen_time: str
    outcome: str  # KEPT or a reject reason
    user: int | None = None
    utc: datetime | None = None
    track_id: str | None = None  # default: a track id of its own, "case-<n>"


def kept(label: str, user_id: str, listen_time: str, user: int, utc: datetime) -> RowCase:
    return RowCase(label, user_id, listen_time, KEPT, user, utc)


def rejected(label: str, user_id: str, listen_time: str, reason: str) -> RowCase:
    return RowCase(label, user_id, listen_time, reason)


def at(*parts: int) -> datetime:
    return datetime(*parts)  # type: ignore[arg-type]


ROW_CASES: list[RowCase] = [
    # user_id: an optional sign and decimal digits that fit in signed 64 bits
    kept("user plain", "7", "2024-02-29 10:00:01", 7, at(2024, 2, 29, 10, 0, 1)),
    kept("user negative", "-5", "2024-02-29 10:00:02", -5, at(2024, 2, 29, 10, 0, 2)),
    kept("user plus sign", "+7", "2024-02-29 10:00:03", 7, at(2024, 2, 29, 10, 0, 3)),
    kept("user leading zeros", "007", "2024-02-29 10:00:04", 7, at(2024, 2, 29, 10, 0, 4)),
    kept("user max int64", MAX_INT64, T0, 2**63 - 1, at(2024, 2, 29, 10)),
    kept("user min int64", "-9223372036854775808", T0, -(2**63), at(2024, 2, 29, 10)),
    kept("user spaces", "  42  ", T0, 42, at(2024, 2, 29, 10)),
    kept("user tab VT FF", "\t\v42\f", T0, 42, at(2024, 2, 29, 10)),
    rejected("user 12.0", "12.0", T0, "invalid_user_id"),
    rejected("user 1e3", "1e3", T0, "invalid_user_id"),
    rejected("user 12a", "12a", T0, "invalid_user_id"),
    rejected("user 0x10", "0x10", T0, "invalid_user_id"),
    rejected("user 1_000", "1_000", T0, "invalid_user_id"),
    rejected("user 0b1", "0b1", T0, "invalid_user_id"),
    kept("user 25 digits, leading zeros", "0" * 24 + "7", T0, 7, at(2024, 2, 29, 10)),
    rejected("user '1 000'", "1 000", T0, "invalid_user_id"),
    rejected("user max int64 + 1", "9223372036854775808", T0, "invalid_user_id"),
    rejected("user min int64 - 1", "-9223372036854775809", T0, "invalid_user_id"),
    rejected("user 20 digits", "12345678901234567890", T0, "invalid_user_id"),
    rejected("user sign only", "+", T0, "invalid_user_id"),
    rejected("user two signs", "--5", T0, "invalid_user_id"),
    rejected("user no-break space", "\xa07", T0, "invalid_user_id"),
    rejected("user Arabic-Indic digits", "\u0661\u0662", T0, "invalid_user_id"),
    rejected("user empty", "", T0, "missing_user_id"),
    rejected("user blank", " \t\v\f ", T0, "missing_user_id"),
    # listen_time: YYYY-MM-DD, space or T, HH:MM:SS, .f{1,6}, zone Z/+HH/+HHMM/+HH:MM, to UTC
    kept("time space", "7", "2024-02-29 10:01:00", 7, at(2024, 2, 29, 10, 1)),
    kept("time T", "7", "2024-02-29T10:02:00", 7, at(2024, 2, 29, 10, 2)),
    kept("time .5", "7", "2024-02-29 10:03:00.5", 7, at(2024, 2, 29, 10, 3, 0, 500000)),
    kept("time .123456", "7", "2024-02-29T10:04:00.123456", 7, at(2024, 2, 29, 10, 4, 0, 123456)),
    kept("time Z", "7", "2024-02-29T10:05:00Z", 7, at(2024, 2, 29, 10, 5)),
    kept("time .25Z", "7", "2024-02-29 10:06:00.25Z", 7, at(2024, 2, 29, 10, 6, 0, 250000)),
    kept("time +HH", "7", "2024-02-29 12:07:00+02", 7, at(2024, 2, 29, 10, 7)),
    kept("time +HHMM", "7", "2024-02-29 15:38:00+0530", 7, at(2024, 2, 29, 10, 8)),
    kept("time +HH:MM", "7", "2024-02-29T15:39:00+05:30", 7, at(2024, 2, 29, 10, 9)),
    kept("time -HH:MM", "7", "2024-02-29 02:10:00-08:00", 7, at(2024, 2, 29, 10, 10)),
    kept("time -HHMM", "7", "2024-02-29 02:11:00-0800", 7, at(2024, 2, 29, 10, 11)),
    kept("time -HH", "7", "2024-02-29 02:12:00-08", 7, at(2024, 2, 29, 10, 12)),
    kept("time offset into next day", "7", "2024-02-29 23:30:00-01:00", 7, at(2024, 3, 1, 0, 30)),
    kept("time offset into leap day", "7", "2024-03-01 00:30:00+01:00", 7, at(2024, 2, 29, 23, 30)),
    kept("time leap day", "7", "2024-02-29 00:00:00", 7, at(2024, 2, 29)),
    kept(
        "time last microsecond",
        "7",
        "2024-02-29 23:59:59.999999",
        7,
        at(2024, 2, 29, 23, 59, 59, 999999),
    ),
    kept("time padded", "7", " \t2024-02-29 10:13:00\v\f", 7, at(2024, 2, 29, 10, 13)),
    rejected("time 2023-02-29", "7", "2023-02-29 10:00:00", "invalid_listen_time"),
    rejected("time 2024-02-30", "7", "2024-02-30 10:00:00", "invalid_listen_time"),
    rejected("time 24:00:00", "7", "2024-02-29 24:00:00", "invalid_listen_time"),
    rejected("time leap second", "7", "2024-02-29 23:59:60", "invalid_listen_time"),
    rejected("time T24:00:00.0", "7", "2024-02-29T24:00:00.0", "invalid_listen_time"),
    rejected("time hour 25", "7", "2024-02-29 25:00:00", "invalid_listen_time"),
    rejected("time minute 60", "7", "2024-02-29 10:60:00", "invalid_listen_time"),
    rejected("time year 0000", "7", "0000-02-29 10:00:00", "invalid_listen_time"),
    rejected("time zone hour 24", "7", "2024-02-29 10:00:00+24:00", "invalid_listen_time"),
    rejected("time zone minute 60", "7", "2024-02-29 10:00:00+05:60", "invalid_listen_time"),
    rejected("time zone one digit", "7", "2024-02-29 10:00:00+5", "invalid_listen_time"),
    rejected("time 24:00:00 with zone", "7", "2024-02-29 24:00:00Z", "invalid_listen_time"),
    rejected("time date only", "7", "2024-02-29", "invalid_listen_time"),
    rejected("time no seconds", "7", "2024-02-29 10:00", "invalid_listen_time"),
    rejected("time epoch seconds", "7", "1709200800", "invalid_listen_time"),
    rejected("time 7 fraction digits", "7", "2024-02-29 10:00:00.1234567", "invalid_listen_time"),
    rejected("time dot without digits", "7", "2024-02-29 10:00:00.", "invalid_listen_time"),
    rejected("time day first", "7", "29/02/2024 10:00:00", "invalid_listen_time"),
    rejected("time month first", "7", "02/29/2024 10:00:00", "invalid_listen_time"),
    rejected("time month name", "7", "Feb 29 2024 10:00:00", "invalid_listen_time"),
    rejected("time zone name", "7", "2024-02-29 10:00:00 UTC", "invalid_listen_time"),
    rejected("time one-digit month", "7", "2024-2-29 10:00:00", "invalid_listen_time"),
    rejected("time no-break space", "7", "2024-02-29 10:00:00\xa0", "invalid_listen_time"),
    rejected("time empty", "7", "", "invalid_listen_time"),
    rejected("time a word", "7", "yesterday", "invalid_listen_time"),
    rejected("time far future", "7", "2099-01-01 00:00:00", "future_listen_time"),
    # the first reason in the contract's order wins
    rejected("missing user and time", "", "yesterday", "missing_user_id"),
    RowCase("missing track", "7", T0, "missing_track_id", track_id=""),
    RowCase("blank track", "7", T0, "missing_track_id", track_id=" \t "),
    rejected("invalid user and time", "1e3", "yesterday", "invalid_user_id"),
]
# The same play twice (one instant in two notations): one kept play, one duplicate copy.
DUPLICATES = [("7", "t1", "2024-02-29 11:00:00"), ("007", "t1", "2024-02-29T12:00:00+01:00")]
# Different keys, identical bytes: separate deliveries whose plays are exact duplicates.
SHARED = b"user_id,track_id,listen_time\n42,t2,2024-02-29 09:00:00\nx,t2,2024-02-29 09:00:00\n"


def track_of(index: int, case: RowCase) -> str:
    return f"case-{index:02d}" if case.track_id is None else case.track_id


def row_file() -> tuple[bytes, list[tuple[RowCase, str, int]]]:
    """The row cases as one CSV file: its bytes, and per case its track id and the physical
    line it starts on (header = 1)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["user_id", "track_id", "listen_time"])
    placed = []
    for index, case in enumerate(ROW_CASES):
        line = out.getvalue().count("\n") + 1
        writer.writerow([case.user_id, track_of(index, case), case.listen_time])
        placed.append((case, track_of(index, case), line))
    writer.writerows(DUPLICATES)
    return out.getvalue().encode(), placed


ROW_FILE_KEY = "streams/rows-corpus.csv"
SHARED_KEYS = ("streams/shared-a.csv", "streams/shared-b.csv")


def test_row_expectations_follow_the_reference(tmp_path: Path) -> None:
    """The row table says what the contract says: tests/kpi_reference.py rejects exactly the rows
    the table rejects, for the same reasons at the same lines, and reads the kept rows' user
    ids and times as the table states them."""
    _write(tmp_path / "users.csv", USERS.encode())
    _write(tmp_path / "songs.csv", SONGS.encode())
    data, placed = row_file()
    result = compute_kpis(
        tmp_path / "users.csv",
        tmp_path / "songs.csv",
        [Delivery(ROW_FILE_KEY, data)],
        datetime.now(),
    )
    assert {r.line: r.reason for r in result.rejects} == {
        line: case.outcome for case, _, line in placed if case.outcome != KEPT
    }
    for case, _, _ in placed:
        if case.outcome == KEPT:
            instant = parse_listen_time(clean(case.listen_time))
            assert parse_user_id(clean(case.user_id)) == case.user, case.label
            assert instant is not None and instant.replace(tzinfo=None) == case.utc, case.label
    assert (result.kept, result.duplicates) == (sum(c.outcome == KEPT for c in ROW_CASES) + 1, 1)


# --- file cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """The file loads: ``rows`` rows in raw, these rejects by physical line, these tracks kept."""

    rows: int
    rejects: dict[int, str] = field(default_factory=dict)
    tracks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Quarantined:
    """The file is refused whole; its reason (ledger and .reason.txt) matches ``reason``."""

    reason: str  # a regular expression, searched case-insensitively


@dataclass(frozen=True)
class Skipped:
    """Not a stream file: never loaded, left where it is, named as skipped by every run with a
    reason matching ``reason``."""

    reason: str  # a regular expression, searched case-insensitively


@dataclass(frozen=True)
class FileCase:
    label: str
    name: str
    data: bytes
    expect: Loaded | Quarantined | Skipped
    local_only: bool = False  # moto's S3 server cannot store the key (real S3 can)

    @property
    def key(self) -> str:
        return "streams/" + self.name


def _lines(*rows: str, end: str = "\n") -> bytes:
    return "".join(row + end for row in rows).encode()


HEADER = "user_id,track_id,listen_time"
ONE_MB = 1_000_000
MIB = 1 << 20
FORGED = "files: 99 loaded, 0 already loaded, 0 rejected"  # a line a file name tries to forge
GZ_ROWS = _lines(HEADER, f"7,t1,{T0}", "bad,t1,2024-02-29 10:00:00")
FILE_CASES: list[FileCase] = [
    FileCase(
        "UTF-8 BOM",
        "bom.csv",
        b"\xef\xbb\xbf" + _lines(HEADER, f"7,bom-1,{T0}", f"42,bom-2,{T0}"),
        Loaded(2, tracks=("bom-1", "bom-2")),
    ),
    FileCase(
        "latin-1 bytes",
        "latin1.csv",
        _lines(HEADER, f"7,t1,{T0}") + b"7,caf\xe9,2024-02-29 10:00:00\n",
        Quarantined(r"utf-?8|unicode|encoding"),
    ),
    FileCase(
        "quoted comma and newline",
        "quoted.csv",
        _lines(
            HEADER,
            f'7,"quoted, comma",{T0}',  # line 2
            f'7,"quoted\nnewline",{T0}',  # lines 3-4
            f"x,t1,{T0}",  # line 5: the physical line, not the 4th record
            f'"4\n2",t1,{T0}',  # lines 6-7: a newline inside a user id is not trimmed away
            f"y,t1,{T0}",  # line 8
        ),
        Loaded(
            5,
            rejects={5: "invalid_user_id", 6: "invalid_user_id", 8: "invalid_user_id"},
            tracks=("quoted, comma", "quoted\nnewline"),
        ),
    ),
    FileCase("header only", "header-only.csv", _lines(HEADER), Loaded(0)),
    FileCase("zero bytes", "zero-bytes.csv", b"", Quarantined(r"empty")),
    FileCase(
        "binary junk",
        "junk.csv",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8,
        Quarantined(r"not (?:a )?csv|binary|utf-?8|unicode"),
    ),
    FileCase(
        "not gzip under a .gz name",
        "fake.csv.gz",
        _lines(HEADER, f"7,t1,{T0}"),
        Quarantined(r"gzip"),
    ),
    FileCase(
        "gzip", "zipped.csv.gz", gzip.compress(GZ_ROWS), Loaded(2, rejects={3: "invalid_user_id"})
    ),
    FileCase(
        "semicolon delimiter",
        "semicolons.csv",
        _lines("user_id;track_id;listen_time", f"7;t1;{T0}"),
        Quarantined(r"column"),
    ),
    FileCase(
        "required column missing",
        "no-listen-time.csv",
        _lines("user_id,track_id", "7,t1"),
        Quarantined(r"listen_time"),
    ),
    FileCase(
        "required column twice",
        "dup-required.csv",
        _lines("user_id,track_id,listen_time,user_id", f"7,t1,{T0},42"),
        Quarantined(r"duplicate|twice|more than once|ambiguous"),
    ),
    FileCase(
        "extra column twice",
        "dup-extra.csv",
        _lines("note,user_id,track_id,note,listen_time", f"a,42,dup-extra,b,{T0}"),
        Loaded(1, tracks=("dup-extra",)),
    ),
    FileCase(
        "CRLF line endings",
        "crlf.csv",
        _lines(
            "user_id,listen_time,track_id",
            f"7,{T0},crlf-1",
            f"x,{T0},t1",
            f"42,{T0},crlf-2",
            end="\r\n",
        ),
        Loaded(3, rejects={3: "invalid_user_id"}, tracks=("crlf-1", "crlf-2")),
    ),
    FileCase(
        "ragged row",
        "ragged.csv",
        _lines(HEADER, f"7,t1,{T0}", "7,t1"),
        Quarantined(r"csv|column|field"),
    ),
    FileCase(
        "1 MB lines",
        "long-lines.csv",
        _lines(
            HEADER,
            f"7,long-1,{T0}{' ' * ONE_MB}",  # 1 MB of padding: trimmed, kept
            f"{'9' * ONE_MB},t1,{T0}",  # a 1 MB user id: invalid, kept in the rejects
        ),
        Loaded(2, rejects={3: "invalid_user_id"}, tracks=("long-1",)),
    ),
    # odd names: loaded under their own name, archived under it
    FileCase(
        "quotes in the name", 'it\'s "quoted".csv', _lines(HEADER, f"7,odd-1,{T0}"), Loaded(1)
    ),
    FileCase("semicolon in the name", "semi;colon.csv", _lines(HEADER, f"7,odd-2,{T0}"), Loaded(1)),
    FileCase("spaces in the name", "with  spaces .csv", _lines(HEADER, f"7,odd-3,{T0}"), Loaded(1)),
    FileCase("non-ASCII name", "ünïcødé-日本語.csv", _lines(HEADER, f"7,odd-4,{T0}"), Loaded(1)),
    FileCase("percent and plus", "100%+plus.csv", _lines(HEADER, f"7,odd-5,{T0}"), Loaded(1)),
    FileCase("glob characters", "glob[1]*?.csv", _lines(HEADER, f"7,odd-6,{T0}"), Loaded(1)),
    # a key is a literal name, never a pattern: each file is read from its own bytes only
    FileCase("bracket pattern", "[ab].csv", _lines(HEADER, f"7,lit-ab,{T0}"), Loaded(1)),
    FileCase("a, matched by [ab]", "a.csv", _lines(HEADER, f"-5,lit-a,{T0}"), Loaded(1)),
    FileCase("b, matched by [ab]", "b.csv", _lines(HEADER, f"42,lit-b,{T0}"), Loaded(1)),
    FileCase("star pattern", "g*.csv", _lines(HEADER, f"7,lit-gstar,{T0}"), Loaded(1)),
    FileCase(
        "gx, matched by g*",
        "gx.csv",
        _lines(HEADER, f"7,lit-gx-1,{T0}", f"7,lit-gx-2,{T0}"),
        Loaded(2),
    ),
    FileCase("brace pattern", "{c,d}.csv", _lines(HEADER, f"7,lit-cd,{T0}"), Loaded(1)),
    FileCase("c, matched by {c,d}", "c.csv", _lines(HEADER, f"7,lit-c,{T0}"), Loaded(1)),
    FileCase(
        "a newline in the name",
        f"nl\n{FORGED}\r.csv",
        _lines(HEADER, f"7,lit-newline,{T0}"),
        Loaded(1, tracks=("lit-newline",)),
        local_only=True,  # moto answers 404 to a PUT of a key with a newline
    ),
    # suffixes without regard to case
    FileCase("upper-case .CSV", "UPPER.CSV", _lines(HEADER, f"7,case-1,{T0}"), Loaded(1)),
    FileCase(
        "gzip as .csv.GZ",
        "mixed.csv.GZ",
        gzip.compress(_lines(HEADER, f"7,case-2,{T0}", f"bad,t1,{T0}")),
        Loaded(2, rejects={3: "invalid_user_id"}, tracks=("case-2",)),
    ),
    FileCase(
        "gzip as .Csv.Gz",
        "Title.Csv.Gz",
        gzip.compress(_lines(HEADER, f"7,case-3,{T0}")),
        Loaded(1, tracks=("case-3",)),
    ),
    # long lines: up to 64 MiB like any other; a longer one refuses the file with its reason
    FileCase(
        "a 20 MB value and 3 MB of trailing spaces",
        "huge-values.csv",
        _lines(
            HEADER,
            f"7,huge-1,{T0}{' ' * (3 * ONE_MB)}",  # valid after trimming: kept
            f"{'9' * (20 * ONE_MB)},t1,{T0}",  # a 20 MB user id: invalid, kept in the rejects
            f"42,huge-2,{T0}",
        ),
        Loaded(3, rejects={3: "invalid_user_id"}, tracks=("huge-1", "huge-2")),
    ),
    FileCase(
        "a line over 64 MiB",
        "over-long.csv.gz",
        gzip.compress(_lines(HEADER, f"7,t1,{T0}{' ' * (64 * MIB)}", f"7,t2,{T0}"), 1),
        Quarantined(r"longer than 64 MiB"),
    ),
    # not stream files: skipped by name with a reason, never loaded, left in place
    FileCase("another extension", "notes.txt", b"not a stream file\n", Skipped(r"not a stream")),
    FileCase("a backup copy", "x.csv.bak", _lines(HEADER, f"7,bak,{T0}"), Skipped(r"\.csv")),
    FileCase("a hidden temporary file", ".tmp-part.csv", _lines(HEADER), Skipped(r"hidden")),
    FileCase("a producer marker", "_SUCCESS", b"", Skipped(r"marker")),
]


def test_file_expectations_follow_the_reference(tmp_path: Path) -> None:
    """The file table agrees with tests/kpi_reference.py: refused files are the quarantined
    ones; loaded files have the stated rows and rejects at those lines."""
    _write(tmp_path / "users.csv", USERS.encode())
    _write(tmp_path / "songs.csv", SONGS.encode())
    for case in FILE_CASES:
        if isinstance(case.expect, Skipped):
            assert pipeline.stream_file_problem(case.key) is not None, case.label
            continue
        result = compute_kpis(
            tmp_path / "users.csv",
            tmp_path / "songs.csv",
            [Delivery(case.key, case.data)],
            datetime.now(),
        )
        if isinstance(case.expect, Quarantined):
            assert list(result.rejected_files) == [case.key], case.label
        else:
            assert not result.rejected_files, case.label
            assert result.raw_rows == case.expect.rows, case.label
            assert {r.line: r.reason for r in result.rejects} == case.expect.rejects, case.label


# --- the runs ------------------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def setup(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The warehouse and landing zone a corpus runs on (``<warehouse>-<landing>``): DuckDB or
    PostgreSQL (pgserver), the local landing directory or S3 (moto), set as a user would, in
    the environment."""
    warehouse, landing = request.param.split("-")
    if warehouse == "postgres":
        db = request.getfixturevalue("pg_database")
        monkeypatch.setenv("MUSIC_ELT_TARGET", "postgres")
        monkeypatch.setenv("WAREHOUSE_HOST", str(db["host"]))
        monkeypatch.setenv("WAREHOUSE_PORT", str(db["port"]))
        monkeypatch.setenv("WAREHOUSE_USER", str(db["user"]))
        monkeypatch.setenv("WAREHOUSE_DBNAME", str(db["dbname"]))
    if landing == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        monkeypatch.setenv("MUSIC_ELT_LANDING", f"s3://{bucket}/corpus")
        monkeypatch.setenv("MUSIC_ELT_S3_ENDPOINT_URL", endpoint)
    return str(request.param)


@pytest.fixture
def workdir(setup: str, tmp_path: Path) -> Path:
    """A work directory whose embedded RDS holds the corpus's users and songs."""
    src, work = tmp_path / "src", tmp_path / "work"
    _write(src / "users.csv", USERS.encode())
    _write(src / "songs.csv", SONGS.encode())
    assert cli(["seed", "--from-dir", str(src), "--workdir", str(work)]) == 0
    return work


def deliver(settings: Settings, versions: list[Version], tmp_path: Path) -> None:
    """Write the files into the landing zone's input prefix, as a producer does (on S3 in one
    part, so that each object's etag is the MD5 the checks expect, also for large files)."""
    landing = pipeline.landing_store(settings)
    for i, version in enumerate(versions):
        if isinstance(landing, S3Landing):
            landing.client.put_object(
                Bucket=landing.bucket, Key=landing.prefix + version.key, Body=version.data
            )
            continue
        staged = tmp_path / "staged" / f"{i:03d}"
        _write(staged, version.data)
        landing.put(version.key, staged)


def run(work: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """``music-elt run``, which must exit 0; its output."""
    code = cli(["run", "--workdir", str(work)])
    captured = capsys.readouterr()
    assert code == 0, f"music-elt run exited {code}:\n{captured.err}\n{captured.out[-3000:]}"
    settings = Settings.from_env(workdir=work)
    # the run used the warehouse the environment names (no DuckDB file beside a PostgreSQL one)
    assert settings.warehouse.duckdb_path.exists() == (settings.warehouse.kind == "duckdb")
    return str(captured.out)


def reference(work: Path, versions: list[Version], tmp_path: Path) -> Any:
    src = tmp_path / "src"
    return compute_kpis(
        src / "users.csv",
        src / "songs.csv",
        [Delivery(v.key, v.data) for v in versions],
        datetime.now(),
    )


def counts_in_equal_counts_out(settings: Settings, expected: Any) -> list[str]:
    (raw,) = query(settings, "select count(*) from raw_streams.streams")[0]
    (kept, kept_raw) = query(
        settings, "select count(*), coalesce(sum(raw_row_count), 0) from marts.fct_listens"
    )[0]
    (rejected,) = query(settings, "select count(*) from marts.fct_rejected_listens")[0]
    problems = []
    if raw != int(kept_raw) + rejected:
        problems.append(f"raw {raw} != kept copies {kept_raw} + rejected {rejected}")
    if (raw, kept, rejected) != (
        expected.raw_rows,
        expected.kept,
        sum(expected.rejected.values()),
    ):
        problems.append(
            f"raw/kept/rejected {raw}/{kept}/{rejected}, reference "
            f"{expected.raw_rows}/{expected.kept}/{sum(expected.rejected.values())}"
        )
    if int(kept_raw) - kept != expected.duplicates:
        problems.append(f"duplicate copies {int(kept_raw) - kept}, reference {expected.duplicates}")
    return problems


@pytest.mark.parametrize("setup", ["duckdb-local", "postgres-local"], indirect=True)
def test_row_corpus(
    setup: str, workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every value form the contract names, one row each, in one file: kept with the contract's user
    id and UTC time, or rejected with the contract's reason at the row's line."""
    settings = Settings.from_env(workdir=workdir)
    data, placed = row_file()
    versions = [
        Version(ROW_FILE_KEY, data),
        *(Version(key, SHARED) for key in SHARED_KEYS),
    ]
    deliver(settings, versions, tmp_path)
    run(workdir, capsys)

    listens = {
        track: (user, moment)
        for track, user, moment in query(
            settings, "select track_id, user_id, listen_time from marts.fct_listens"
        )
    }
    rejects = {
        int(line): reason
        for line, reason in query(
            settings,
            "select line_number, reject_reason from marts.fct_rejected_listens "
            "where source_file = %s",
            (ROW_FILE_KEY,),
        )
    }
    problems = []
    for case, track, line in placed:
        shown = f"{case.label} (user_id={case.user_id!r}, listen_time={case.listen_time!r})"
        if case.outcome == KEPT:
            got = listens.get(track)
            if line in rejects:
                problems.append(f"{shown}: rejected as {rejects[line]}, expected kept")
            elif got != (case.user, case.utc):
                problems.append(f"{shown}: kept as {got}, expected {(case.user, case.utc)}")
        else:
            if rejects.get(line) != case.outcome:
                observed = rejects.get(line) or (
                    f"kept as {listens[track]}" if track in listens else "nowhere"
                )
                problems.append(f"{shown}: {observed}, expected {case.outcome}")
    assert_no_problems(problems, f"{setup}: {len(problems)} of {len(placed)} row cases")

    expected = reference(workdir, versions, tmp_path)
    assert_no_problems(counts_in_equal_counts_out(settings, expected), "counts in, counts out")
    assert_marts_match(expected, settings)
    assert_no_problems(
        ledger_problems(settings, versions)
        + landing_problems(settings, versions)
        + raw_problems(settings, versions),
        "files",
    )


@pytest.mark.parametrize(
    "setup", ["duckdb-local", "duckdb-s3", "postgres-local", "postgres-s3"], indirect=True
)
def test_file_corpus(
    setup: str, workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every file-level case in one run: loaded (rows in raw, rejects at their physical lines,
    values intact, archived once) or quarantined with its reason, exactly once."""
    settings = Settings.from_env(workdir=workdir)
    cases = [c for c in FILE_CASES if not (c.local_only and setup.endswith("-s3"))]
    versions = [Version(case.key, case.data) for case in cases]
    deliver(settings, versions, tmp_path)
    out = run(workdir, capsys)

    ledger = {row["object_key"]: row for row in ledger_rows(settings)}
    quarantine = landing_objects(settings, QUARANTINE)
    tracks = {t for (t,) in query(settings, "select distinct track_id from marts.fct_listens")}
    rejects: dict[str, dict[int, str]] = {}
    for source_file, line, reason in query(
        settings, "select source_file, line_number, reject_reason from marts.fct_rejected_listens"
    ):
        rejects.setdefault(source_file, {})[int(line)] = reason
    problems = []
    for case, version in zip(cases, versions, strict=True):
        row = ledger.get(case.key)
        status = f"ledger status {row['status']!r} ({row['reason']})" if row else "no ledger row"
        if isinstance(case.expect, Skipped):
            if row:
                problems.append(f"{case.label}: {status}, expected skipped")
            pattern = re.compile(case.expect.reason, re.IGNORECASE)
            said = [line for line in out.splitlines() if f"skipped {case.key}:" in line]
            if not said or not pattern.search(said[0]):
                problems.append(f"{case.label}: output says {said}, expected a skipped line")
            continue
        if isinstance(case.expect, Quarantined):
            pattern = re.compile(case.expect.reason, re.IGNORECASE)
            if not row or row["status"] != "rejected":
                problems.append(f"{case.label}: {status}, expected quarantined")
                continue
            if not pattern.search(row["reason"] or ""):
                problems.append(f"{case.label}: reason {row['reason']!r} !~ /{case.expect.reason}/")
            found = find_by_content(quarantine, version)
            reason_file = quarantine.get(found[0] + REASON_SUFFIX, b"") if found else b""
            if not pattern.search(reason_file.decode(errors="replace")):
                problems.append(
                    f"{case.label}: {REASON_SUFFIX} {reason_file!r} !~ /{case.expect.reason}/"
                )
        else:
            if not row or row["status"] != "loaded":
                problems.append(f"{case.label}: {status}, expected loaded")
                continue
            got = rejects.get(case.key, {})
            if got != case.expect.rejects:
                problems.append(f"{case.label}: rejects {got}, expected {case.expect.rejects}")
            missing = [t for t in case.expect.tracks if t not in tracks]
            if missing:
                problems.append(f"{case.label}: plays of {missing} not in marts.fct_listens")
    by_kind: dict[type, list[Version]] = {Loaded: [], Quarantined: [], Skipped: []}
    for case, version in zip(cases, versions, strict=True):
        by_kind[type(case.expect)].append(version)
    loaded, refused, skipped = by_kind[Loaded], by_kind[Quarantined], by_kind[Skipped]
    problems += ledger_problems(settings, loaded, refused)
    problems += landing_problems(settings, loaded, refused, skipped)
    problems += raw_problems(settings, loaded + refused)
    if any(line.startswith(FORGED) for line in out.splitlines()):
        problems.append(f"a file name forged the output line {FORGED!r}")
    assert_no_problems(problems, f"file corpus, {setup}")

    expected = reference(workdir, versions, tmp_path)
    assert_no_problems(counts_in_equal_counts_out(settings, expected), "counts in, counts out")
    assert_marts_match(expected, settings)


# --- re-deliveries that cannot be loaded, and corrections that can -------------------------------

K_KEY, M_KEY = "streams/k.csv.gz", "streams/m.csv"
K_PLAYS = gzip.compress(
    _lines(HEADER, *(f"7,redo-k{n},2024-02-29 1{n}:00:00" for n in range(4))), 9
)
M_FIRST = _lines(HEADER, f"7,redo-m1,{T0}", f"42,redo-m2,{T0}", f"-5,redo-m3,{T0}")
M_CORRECTED = _lines(
    HEADER, f"7,redo-m1,{T0}", f"42,redo-m2,{T0}", f"7,redo-m4,{T0}", f"7,redo-m5,{T0}"
)


@pytest.mark.parametrize("setup", ["duckdb-local", "postgres-s3"], indirect=True)
def test_an_unloadable_reupload_supersedes_nothing_and_a_correction_says_what_it_changed(
    setup: str, workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A loaded ``k.csv.gz`` re-uploaded truncated is quarantined with its reason, supersedes
    nothing (its 4 plays stay in the marts) and the run warns by name; it is not called a
    correction. ``m.csv`` corrected (one play removed, two added) is a correction, reported with
    the plays it added and removed."""
    settings = Settings.from_env(workdir=workdir)
    first = [Version(K_KEY, K_PLAYS), Version(M_KEY, M_FIRST)]
    deliver(settings, first, tmp_path / "first")
    run(workdir, capsys)
    second = [Version(K_KEY, K_PLAYS[: len(K_PLAYS) * 2 // 3]), Version(M_KEY, M_CORRECTED)]
    deliver(settings, second, tmp_path / "second")
    out = run(workdir, capsys)

    lines = out.splitlines()
    problems = []
    warned = [line for line in lines if "warn:" in line and K_KEY in line]
    if not warned or not re.search(r"could not be loaded.*still counts", warned[0]):
        problems.append(f"no warning naming {K_KEY}: {warned}")
    said = [line for line in lines if K_KEY in line and "warn:" not in line]
    if any(re.search(r"(?i)correction|supersed", line) for line in said):
        problems.append(f"{K_KEY} called a correction:\n{out[-2000:]}")
    if not any(f"correction {M_KEY}: 2 play(s) added, 1 removed" in line for line in lines):
        problems.append(f"no correction effect for {M_KEY}:\n{out[-2000:]}")
    tracks = {t for (t,) in query(settings, "select track_id from marts.fct_listens")}
    problems += [f"play {t} left the marts" for t in ("redo-k0", "redo-k3") if t not in tracks]
    versions = first + second
    problems += ledger_problems(
        settings, [first[0], *first[1:], second[1]], [second[0]], [first[1]]
    )
    problems += landing_problems(settings, [first[0], first[1], second[1]], [second[0]])
    assert_no_problems(problems, f"re-deliveries, {setup}")
    expected = reference(workdir, versions, tmp_path)
    assert [key for key, _ in expected.refused_redeliveries] == [K_KEY]
    assert_marts_match(expected, settings)
