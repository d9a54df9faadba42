"""Hand-computed cases for every rule and tie-break of the KPI reference (the KPI contract in
dbt_project/models/_contract__docs.md)."""

from __future__ import annotations

import csv
import gzip
import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from tests import kpi_reference as ref

LOADED_AT = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
SONG_DEFAULTS = {
    "id": "0",
    "artists": "Artist",
    "album_name": "Album",
    "track_name": "Track",
    "popularity": "50",
    "duration_ms": "200000",
    "explicit": "False",
    "track_genre": "pop",
}
SONG_HEADER = (
    "id",
    "track_id",
    "artists",
    "album_name",
    "track_name",
    "popularity",
    "duration_ms",
    "explicit",
    "track_genre",
)
USERS_HEADER = ("user_id", "user_name")


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


class Source:
    """A tiny source data set under ``tmp_path``."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.users = _write_csv(tmp_path / "users.csv", USERS_HEADER, [(1, "a"), (2, "b")])
        self.songs = self.write_songs([])
        self.streams: list[Path] = []

    def write_songs(self, songs: Sequence[dict[str, str]]) -> Path:
        rows = [[{**SONG_DEFAULTS, **song}[c] for c in SONG_HEADER] for song in songs]
        self.songs = _write_csv(self.dir / "songs.csv", SONG_HEADER, rows)
        return self.songs

    def add_streams(self, rows: Sequence[Sequence[object]], name: str | None = None) -> Path:
        name = name or f"part-{len(self.streams) + 1:03d}.csv"
        path = _write_csv(self.dir / name, ("user_id", "track_id", "listen_time"), rows)
        self.streams.append(path)
        return path

    def kpis(self, loaded_at: datetime | Callable[[Path], datetime] = LOADED_AT) -> ref.KpiResult:
        return ref.compute_kpis(self.users, self.songs, self.streams, loaded_at)


@pytest.fixture
def source(tmp_path: Path) -> Source:
    return Source(tmp_path)


def _one(rows: list[dict[str, object]], **match: object) -> dict[str, object]:
    found = [row for row in rows if all(row[k] == v for k, v in match.items())]
    assert len(found) == 1, f"{len(found)} rows match {match}: {rows}"
    return found[0]


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-05 10:11:12", datetime(2026, 1, 5, 10, 11, 12, tzinfo=UTC)),
        ("2026-01-05T10:11:12", datetime(2026, 1, 5, 10, 11, 12, tzinfo=UTC)),
        ("2026-01-05 10:11:12.5", datetime(2026, 1, 5, 10, 11, 12, 500000, tzinfo=UTC)),
        ("2026-01-05 10:11:12.123456", datetime(2026, 1, 5, 10, 11, 12, 123456, tzinfo=UTC)),
        ("2026-01-05T10:11:12Z", datetime(2026, 1, 5, 10, 11, 12, tzinfo=UTC)),
        ("2026-01-06T01:30:00+02:00", datetime(2026, 1, 5, 23, 30, tzinfo=UTC)),
        ("2026-01-05 20:30:00-05:00", datetime(2026, 1, 6, 1, 30, tzinfo=UTC)),
        ("2026-01-05T10:00:00.250+05:30", datetime(2026, 1, 5, 4, 30, 0, 250000, tzinfo=UTC)),
        ("2026-01-05 10:00:00+0530", datetime(2026, 1, 5, 4, 30, tzinfo=UTC)),
        ("2026-01-05 10:00:00+01", datetime(2026, 1, 5, 9, 0, tzinfo=UTC)),
        ("2026-13-45 99:00:00", None),
        ("yesterday", None),
        ("2026-02-30 10:00:00", None),
        ("2026-01-05", None),
        ("2026-01-05 10:00", None),
        ("2026-01-05 24:00:00", None),
        ("2026-01-05 10:00:00.1234567", None),
        ("2026-01-05 10:00:00+25:00", None),
        ("2026-01-05 10:00:00 UTC", None),
        (None, None),
        # every form the contract's "Exact value formats" names
        ("2024-02-29 10:00:00", datetime(2024, 2, 29, 10, tzinfo=UTC)),  # leap year
        ("2023-02-29 10:00:00", None),  # not a leap year
        ("2024-02-30 10:00:00", None),
        ("2024-04-31 10:00:00", None),
        ("2024-02-29 23:59:59.999999", datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2024-02-29 23:59:60", None),  # no leap second
        ("2024-02-29 24:00:00", None),
        ("2024-02-29 10:60:00", None),
        ("2024-02-29T23:30:00-01:00", datetime(2024, 3, 1, 0, 30, tzinfo=UTC)),
        ("2024-03-01 00:30:00+01", datetime(2024, 2, 29, 23, 30, tzinfo=UTC)),
        ("2024-02-29 10:00:00-08", datetime(2024, 2, 29, 18, tzinfo=UTC)),
        ("2024-02-29 10:00:00-0830", datetime(2024, 2, 29, 18, 30, tzinfo=UTC)),
        ("2024-02-29 10:00:00+00:00", datetime(2024, 2, 29, 10, tzinfo=UTC)),
        ("2024-02-29T10:00:00.5Z", datetime(2024, 2, 29, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2024-02-29 10:00:00.", None),  # a dot without digits
        ("2024-02-29 10:00:00Z+01:00", None),
        ("2024-02-29 10:00:00+1", None),
        ("2024-02-29 10:00:00+01:0", None),
        ("2024-02-29  10:00:00", None),  # two spaces
        ("2024-02-29_10:00:00", None),
        ("2024-2-29 10:00:00", None),
        ("2024-02-29 1:00:00", None),
        ("1709200800", None),  # epoch seconds
        ("1709200800.5", None),
        ("29/02/2024 10:00:00", None),  # day first
        ("02/29/2024 10:00:00", None),  # month first
        ("2024/02/29 10:00:00", None),
        ("Feb 29 2024 10:00:00", None),  # month names
        ("29 February 2024 10:00:00", None),
        ("10:00:00 2024-02-29", None),  # time first
        ("\uff12\uff10\uff12\uff14-02-29 10:00:00", None),  # full-width digits are not ASCII digits
    ],
)
def test_parse_listen_time(text: str | None, expected: datetime | None) -> None:
    assert ref.parse_listen_time(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12", 12),
        ("+7", 7),
        ("-3", -3),
        ("007", 7),
        ("12a", None),
        ("1.0", None),
        ("", None),
        (str(2**63), None),
        (str(2**63 - 1), 2**63 - 1),
        ("١٢", None),  # Arabic-Indic digits are not an integer
        (None, None),
        # every form the contract's "Exact value formats" names
        ("12.0", None),
        ("1e3", None),
        ("0x10", None),
        ("1 000", None),
        ("12345678901234567890", None),  # 20 digits
        ("9223372036854775807", 2**63 - 1),  # 19 digits, the largest signed 64-bit value
        ("9223372036854775808", None),
        ("-9223372036854775808", -(2**63)),
        ("-9223372036854775809", None),
        ("+9223372036854775807", 2**63 - 1),
        ("0000000000000000000000007", 7),  # leading zeros do not count against 64 bits
        ("-5", -5),
        ("+0", 0),
        ("-0", 0),
        ("+", None),
        ("-", None),
        ("--5", None),
        ("+-5", None),
        ("5-", None),
        ("1_000", None),
        ("1,000", None),
    ],
)
def test_parse_user_id(text: str | None, expected: int | None) -> None:
    assert ref.parse_user_id(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" \t\r\n\v\f7 \t\r\n\v\f", "7"),  # ASCII whitespace: space, tab, CR, LF, VT, FF
        ("\v\f", None),  # blank is missing
        ("", None),
        ("\xa07", "\xa07"),  # a no-break space is not ASCII whitespace
        ("7\u2003", "7\u2003"),  # nor is an em space
        ("\x1c7\x1f", "\x1c7\x1f"),  # nor are the separators Python's str.strip() removes
        ("\x857", "\x857"),  # nor NEL
        (" a b ", "a b"),
        (None, None),
    ],
)
def test_clean_trims_ascii_whitespace_only(text: str | None, expected: str | None) -> None:
    assert ref.clean(text) == expected


def test_values_are_trimmed_before_they_are_parsed(source: Source) -> None:
    source.write_songs([{"track_id": "T1"}])
    source.add_streams(
        [
            ("\v7\f", "\tT1\f", "\f2026-01-05 10:00:00\v"),  # kept: user 7
            ("\xa07", "T1", "2026-01-05 10:00:01"),  # NBSP: invalid_user_id
            ("7", "T1", "2026-01-05 10:00:02\xa0"),  # NBSP: invalid_listen_time
            ("\v", "T1", "2026-01-05 10:00:03"),  # blank: missing_user_id
            ("7", "\f ", "2026-01-05 10:00:04"),  # blank: missing_track_id
            ("7", "T1", " \t "),  # blank time: invalid_listen_time
        ]
    )
    result = source.kpis()
    assert [(r.line, r.reason) for r in result.rejects] == [
        (3, "invalid_user_id"),
        (4, "invalid_listen_time"),
        (5, "missing_user_id"),
        (6, "missing_track_id"),
        (7, "invalid_listen_time"),
    ]
    assert result.kept == 1
    assert result.hourly[0]["listen_hour"] == datetime(2026, 1, 5, 10)
    assert result.genre_daily[0]["most_popular_track_id"] == "T1"


@pytest.mark.parametrize(
    ("credit", "expected"),
    [
        ("Andrew Foy;Renee Foy", ("Andrew Foy", "Renee Foy")),
        (" Andrew Foy ; Renee Foy ", ("Andrew Foy", "Renee Foy")),
        ("a;;b;", ("a", "b")),
        (";  ;", ()),
        (None, ()),
        ("a;a", ("a",)),
        ("Earth, Wind & Fire", ("Earth, Wind & Fire",)),
    ],
)
def test_split_artists(credit: str | None, expected: tuple[str, ...]) -> None:
    assert ref.split_artists(credit) == expected


# --- rejects, duplicates -------------------------------------------------------------------------


def test_reject_rules_and_reason_order(source: Source) -> None:
    source.write_songs([{"track_id": "T1"}])
    source.add_streams(
        [
            (1, "T1", "2026-01-05 10:00:00"),  # line 2: kept
            ("", "T1", "2026-01-05 10:00:01"),  # 3: missing user
            ("  ", "T1", "2026-01-05 10:00:02"),  # 4: blank user
            (1, "", "2026-01-05 10:00:03"),  # 5: missing track
            (1, " ", "2026-01-05 10:00:04"),  # 6: blank track
            ("12a", "T1", "2026-01-05 10:00:05"),  # 7: not an integer
            (1, "T1", "2026-02-30 10:00:00"),  # 8: impossible date
            (1, "T1", "yesterday"),  # 9
            (1, "T1", ""),  # 10: missing time
            (1, "T1", "2026-01-11 12:00:00"),  # 11: exactly load time + 1 day: kept
            (1, "T1", "2026-01-11 12:00:00.000001"),  # 12: later: future
            (1, "T1", "2099-01-05 10:00:00"),  # 13: future
            ("", "", "yesterday"),  # 14: several problems: the first reason
            ("x", "T1", "2099-01-01 00:00:00"),  # 15: invalid user before future
        ]
    )
    result = source.kpis()
    assert result.raw_rows == 14
    assert result.kept == 2
    assert result.rejected == {
        "missing_user_id": 3,
        "missing_track_id": 2,
        "invalid_user_id": 2,
        "invalid_listen_time": 3,
        "future_listen_time": 2,
    }
    assert [(r.line, r.reason) for r in result.rejects][:3] == [
        (3, "missing_user_id"),
        (4, "missing_user_id"),
        (5, "missing_track_id"),
    ]
    assert result.rejects[-1] == ref.Reject(str(source.streams[0]), 15, "invalid_user_id")
    assert sum(row["listen_count"] for row in result.hourly) == 2


def test_future_limit_uses_each_files_load_time(source: Source) -> None:
    early = source.add_streams([(1, "T1", "2026-01-08 00:00:00")], name="a.csv")
    source.add_streams([(1, "T1", "2026-01-08 00:00:01")], name="b.csv")
    loaded = {early: datetime(2026, 1, 6, 12, 0)}  # naive means UTC

    result = source.kpis(lambda path: loaded.get(path, datetime(2026, 1, 9)))
    assert result.rejected == {"future_listen_time": 1}
    assert result.rejects[0].file == str(early)


def test_exact_duplicates_count_once(source: Source) -> None:
    source.write_songs([{"track_id": "T1"}, {"track_id": "T2"}])
    source.add_streams(
        [
            (1, "T1", "2026-01-05 10:00:00"),
            (1, "T1", "2026-01-05 10:00:00"),  # exact repeat
            ("001", " T1 ", "2026-01-05T12:00:00+02:00"),  # same user, track, instant
            (1, "T1", "2026-01-05T10:00:00.000Z"),  # same instant again
            (1, "T1", "2026-01-05 10:00:00.000001"),  # another instant: kept
            (1, "T2", "2026-01-05 10:00:00"),  # another track: kept
            (2, "T1", "2026-01-05 10:00:00"),  # another user: kept
        ]
    )
    source.add_streams([(1, "T1", "2026-01-05 10:00:00"), (2, "T2", "2026-01-05 10:30:00")])
    result = source.kpis()
    assert (result.raw_rows, result.duplicates, result.kept) == (9, 4, 5)
    hour = _one(result.hourly, listen_hour=datetime(2026, 1, 5, 10))
    assert (hour["listen_count"], hour["unique_listeners"], hour["distinct_tracks"]) == (5, 2, 2)


def test_rejected_rows_are_not_duplicates(source: Source) -> None:
    source.add_streams([("x", "T1", "2026-01-05 10:00:00"), ("x", "T1", "2026-01-05 10:00:00")])
    result = source.kpis()
    assert (result.rejected, result.duplicates, result.kept) == ({"invalid_user_id": 2}, 0, 0)


# --- genre daily -------------------------------------------------------------------------------


def test_unknown_tracks_and_users_are_kept(source: Source) -> None:
    source.write_songs([{"track_id": "T1", "track_genre": "pop"}])
    source.add_streams(
        [
            (1, "T1", "2026-01-05 10:00:00"),
            (1, "T1", "2026-01-05 11:00:00"),
            (1, "T1", "2026-01-05 12:00:00"),
            (99, "T1", "2026-01-05 13:00:00"),  # user not in users: a listener
            (2, "NOPE", "2026-01-05 14:00:00"),  # track not in songs: genre unknown
        ]
    )
    result = source.kpis()
    assert (result.unknown_track_plays, result.unknown_user_plays) == (1, 1)
    pop = _one(result.genre_daily, track_genre="pop")
    unknown = _one(result.genre_daily, track_genre="unknown")
    assert (pop["listen_count"], pop["unique_listeners"]) == (4, 2)
    assert pop["popularity_index"] == pytest.approx(0.8, rel=1e-12)
    assert unknown["popularity_index"] == pytest.approx(0.2, rel=1e-12)
    assert unknown["avg_track_duration_sec"] is None
    assert unknown["avg_popularity"] is None
    assert unknown["most_popular_track_id"] == "NOPE"
    assert unknown["most_popular_track_name"] is None
    assert unknown["most_popular_track_plays"] == 1


def test_averages_are_play_weighted(source: Source) -> None:
    source.write_songs(
        [
            {"track_id": "A", "duration_ms": "200000", "popularity": "50"},
            {"track_id": "B", "duration_ms": "100500", "popularity": "80"},
        ]
    )
    source.add_streams(
        [(u, "A", f"2026-01-05 10:0{u}:00") for u in (1, 2, 3)] + [(1, "B", "2026-01-05 11:00:00")]
    )
    row = _one(source.kpis().genre_daily, track_genre="pop")
    assert row["avg_track_duration_sec"] == pytest.approx((3 * 200.0 + 100.5) / 4, rel=1e-12)
    assert row["avg_popularity"] == pytest.approx((3 * 50 + 80) / 4, rel=1e-12)
    assert row["listen_count"] == 4


def test_popularity_index_is_share_of_the_days_plays(source: Source) -> None:
    source.write_songs(
        [{"track_id": "A", "track_genre": "pop"}, {"track_id": "B", "track_genre": "rock"}]
    )
    source.add_streams(
        [
            (1, "A", "2026-01-05 00:00:00"),
            (1, "B", "2026-01-05 23:59:59"),
            (1, "A", "2026-01-06T00:30:00+02:00"),  # 2026-01-05 22:30 UTC
            (1, "A", "2026-01-06 00:00:00"),
        ]
    )
    result = source.kpis()
    day1 = [row for row in result.genre_daily if row["listen_date"] == date(2026, 1, 5)]
    assert {row["track_genre"]: row["popularity_index"] for row in day1} == {
        "pop": pytest.approx(2 / 3),
        "rock": pytest.approx(1 / 3),
    }
    assert _one(result.genre_daily, listen_date=date(2026, 1, 6))["popularity_index"] == 1.0


def test_most_popular_track_tie_breaks(source: Source) -> None:
    source.write_songs(
        [
            {"track_id": "a1", "popularity": "90", "track_genre": "g1"},
            {"track_id": "a2", "popularity": "10", "track_name": "Two", "track_genre": "g1"},
            {"track_id": "b1", "popularity": "40", "track_genre": "g2"},
            {"track_id": "b2", "popularity": "70", "track_name": "B Two", "track_genre": "g2"},
            {"track_id": "c_a", "popularity": "60", "track_genre": "g3"},
            {"track_id": "c_B", "popularity": "60", "track_name": "Upper", "track_genre": "g3"},
        ]
    )
    rows = [
        (1, "a2", "2026-01-05 10:00:00"),  # g1: most plays beats popularity
        (2, "a2", "2026-01-05 10:00:00"),
        (1, "a1", "2026-01-05 10:00:00"),
        (1, "b1", "2026-01-05 10:00:00"),  # g2: equal plays, higher popularity
        (1, "b2", "2026-01-05 10:00:00"),
        (1, "c_a", "2026-01-05 10:00:00"),  # g3: equal plays and popularity, smaller id
        (1, "c_B", "2026-01-05 10:00:00"),  # 'B' (0x42) < 'a' (0x61) in bytes
        (1, "zz", "2026-01-05 10:00:00"),  # unknown: equal plays, smaller id
        (1, "Zz", "2026-01-05 10:00:00"),
    ]
    source.add_streams(rows)
    result = source.kpis()
    g1 = _one(result.genre_daily, track_genre="g1")
    assert (g1["most_popular_track_id"], g1["most_popular_track_name"]) == ("a2", "Two")
    assert g1["most_popular_track_plays"] == 2
    g2 = _one(result.genre_daily, track_genre="g2")
    assert (g2["most_popular_track_id"], g2["most_popular_track_plays"]) == ("b2", 1)
    g3 = _one(result.genre_daily, track_genre="g3")
    assert (g3["most_popular_track_id"], g3["most_popular_track_name"]) == ("c_B", "Upper")
    assert _one(result.genre_daily, track_genre="unknown")["most_popular_track_id"] == "Zz"


def test_duplicate_songs_keep_one_row_by_rule(source: Source) -> None:
    source.write_songs(
        [
            # Highest popularity wins, whatever the text.
            {"track_id": "P", "popularity": "40", "track_genre": "aaa"},
            {"track_id": "P", "popularity": "60", "track_genre": "zzz", "duration_ms": "1000"},
            # Same popularity: smallest genre as bytes ('Z' < 'a' < 'é'), whatever follows.
            {"track_id": "G", "track_genre": "acoustic"},
            {"track_id": "G", "track_genre": "électro"},
            {"track_id": "G", "track_genre": "Zouk", "album_name": "z", "duration_ms": "3000"},
            # Same genre: album, then track name, then artists decide.
            {"track_id": "A", "track_genre": "alb", "album_name": "b", "track_name": "a"}
            | {"artists": "a", "duration_ms": "1"},
            {"track_id": "A", "track_genre": "alb", "album_name": "a", "track_name": "z"}
            | {"artists": "z", "duration_ms": "2000"},
            {"track_id": "N", "track_genre": "nam", "track_name": "y", "artists": "a"}
            | {"duration_ms": "1"},
            {"track_id": "N", "track_genre": "nam", "track_name": "x", "artists": "z"}
            | {"duration_ms": "4000"},
            {"track_id": "R", "track_genre": "art", "artists": "b", "duration_ms": "1"},
            {"track_id": "R", "track_genre": "art", "artists": "B", "duration_ms": "5000"},
            # Missing popularity counts as lowest.
            {"track_id": "M", "popularity": "", "track_genre": "no-pop"},
            {"track_id": "M", "popularity": "0", "track_genre": "zero-pop"},
        ]
    )
    source.add_streams([(1, t, "2026-01-05 10:00:00") for t in "PGANRM"])
    result = source.kpis()
    assert (result.song_rows, result.duplicate_song_rows) == (13, 7)
    genres = {row["track_genre"]: row for row in result.genre_daily}
    assert set(genres) == {"zzz", "Zouk", "alb", "nam", "art", "zero-pop"}
    assert genres["zzz"]["avg_popularity"] == 60.0
    assert genres["zzz"]["avg_track_duration_sec"] == 1.0
    assert genres["Zouk"]["avg_track_duration_sec"] == 3.0
    assert genres["alb"]["avg_track_duration_sec"] == 2.0
    assert genres["nam"]["avg_track_duration_sec"] == 4.0
    assert genres["art"]["avg_track_duration_sec"] == 5.0


def test_duplicate_songs_equal_up_to_artists_keep_the_shortest(source: Source) -> None:
    """The contract's rule 5 ends with "then the smallest duration_ms" (missing last)."""
    same = {"popularity": "50", "track_genre": "g", "album_name": "A", "track_name": "N"}
    source.write_songs(
        [
            {"track_id": "D", **same, "artists": "x", "duration_ms": "3000"},
            {"track_id": "D", **same, "artists": "x", "duration_ms": "2000"},
            {"track_id": "D", **same, "artists": "x", "duration_ms": "9000"},
            {"track_id": "E", **same, "artists": "y", "duration_ms": ""},
            {"track_id": "E", **same, "artists": "y", "duration_ms": "7000"},
        ]
    )
    source.add_streams([(1, "D", "2026-01-05 10:00:00"), (1, "E", "2026-01-06 10:00:00")])
    result = source.kpis()
    day1, day2 = result.genre_daily
    assert day1["avg_track_duration_sec"] == 2.0
    assert day2["avg_track_duration_sec"] == 7.0


def test_genre_rows_sorted_by_date_then_genre_bytes(source: Source) -> None:
    source.write_songs(
        [{"track_id": t, "track_genre": g} for t, g in (("1", "b"), ("2", "B"), ("3", "é"))]
    )
    source.add_streams(
        [(1, t, d) for t in "123" for d in ("2026-01-06 01:00:00", "2026-01-05 01:00:00")]
        + [(1, "X", "2026-01-05 02:00:00")]
    )
    keys = [(row["listen_date"], row["track_genre"]) for row in source.kpis().genre_daily]
    d5, d6 = date(2026, 1, 5), date(2026, 1, 6)
    assert keys == [
        (d5, "B"),
        (d5, "b"),
        (d5, "unknown"),
        (d5, "é"),
        (d6, "B"),
        (d6, "b"),
        (d6, "é"),
    ]


# --- hourly and artists -------------------------------------------------------------------------


def test_hours_are_timestamps_not_pooled_hours_of_day(source: Source) -> None:
    source.write_songs([{"track_id": "T1"}, {"track_id": "T2"}])
    source.add_streams(
        [
            (1, "T1", "2026-01-05 10:59:59.999999"),
            (2, "T1", "2026-01-05 10:00:00"),
            (2, "T2", "2026-01-05T12:30:00+02:00"),  # 10:30 UTC
            (1, "T1", "2026-01-06 10:15:00"),  # same hour of day, another day
            (1, "T1", "2026-01-05 11:00:00"),
        ]
    )
    hourly = source.kpis().hourly
    assert [row["listen_hour"] for row in hourly] == [
        datetime(2026, 1, 5, 10),
        datetime(2026, 1, 5, 11),
        datetime(2026, 1, 6, 10),
    ]
    first = hourly[0]
    assert first["listen_date"] == date(2026, 1, 5)
    assert first["hour_of_day"] == 10
    assert (first["listen_count"], first["unique_listeners"], first["distinct_tracks"]) == (3, 2, 2)
    assert first["track_diversity_index"] == pytest.approx(2 / 3, rel=1e-12)


def test_artist_credits_and_top_artist_ties(source: Source) -> None:
    source.write_songs(
        [
            {"track_id": "T1", "artists": " Zed ;Émile;; "},
            {"track_id": "T2", "artists": "Émile"},
            {"track_id": "T3", "artists": "Zed;Alma"},
            {"track_id": "T4", "artists": "alma"},
            {"track_id": "T5", "artists": "Bo"},
        ]
    )
    source.add_streams(
        [
            (1, "T1", "2026-01-05 10:00:00"),  # Zed 1, Émile 1
            (2, "T2", "2026-01-05 10:01:00"),  # Émile 2
            (3, "T3", "2026-01-05 10:02:00"),  # Zed 2, Alma 1 -> tie at 2: 'Z' < 'É' in bytes
            (1, "UNKNOWN", "2026-01-05 10:03:00"),
            (2, "UNKNOWN", "2026-01-05 10:04:00"),
            (3, "UNKNOWN", "2026-01-05 10:05:00"),  # unknown tracks credit nobody
            (1, "UNKNOWN", "2026-01-05 11:00:00"),  # an hour without known tracks
            (1, "T4", "2026-01-05 12:00:00"),  # tie at 1: 'B' < 'a' in bytes, not in a locale
            (1, "T5", "2026-01-05 12:00:00"),
        ]
    )
    result = source.kpis()
    ten = _one(result.hourly, listen_hour=datetime(2026, 1, 5, 10))
    assert (ten["top_artist"], ten["top_artist_plays"], ten["listen_count"]) == ("Zed", 2, 6)
    eleven = _one(result.hourly, listen_hour=datetime(2026, 1, 5, 11))
    assert (eleven["top_artist"], eleven["top_artist_plays"]) == (None, None)
    assert [
        (row["listen_hour"].hour, row["artist_rank"], row["artist_name"], row["listen_count"])
        for row in result.top_artists
    ] == [
        (10, 1, "Zed", 2),
        (10, 2, "Émile", 2),
        (10, 3, "Alma", 1),
        (12, 1, "Bo", 1),
        (12, 2, "alma", 1),
    ]
    assert _one(result.hourly, listen_hour=datetime(2026, 1, 5, 12))["top_artist"] == "Bo"


def test_top_five_artists_per_hour(source: Source) -> None:
    credits = {"T1": "f;e;d;c;b;a", "T2": "c;d", "T3": "d"}
    source.write_songs([{"track_id": t, "artists": a} for t, a in credits.items()])
    source.add_streams(
        [(1, t, "2026-01-05 10:00:00") for t in credits]
        + [(1, "T1", "2026-01-05 11:00:00"), (1, "T2", "2026-01-05 11:00:00")]
    )
    result = source.kpis()
    rows = [(r["listen_hour"].hour, r["artist_rank"], r["artist_name"]) for r in result.top_artists]
    assert rows == [
        (10, 1, "d"),  # 3 plays
        (10, 2, "c"),  # 2 plays
        (10, 3, "a"),  # then 1 play each, by name
        (10, 4, "b"),
        (10, 5, "e"),
        (11, 1, "c"),
        (11, 2, "d"),
        (11, 3, "a"),
        (11, 4, "b"),
        (11, 5, "e"),
    ]
    assert result.top_artists[0]["listen_count"] == 3
    assert _one(result.hourly, listen_hour=datetime(2026, 1, 5, 10))["top_artist"] == "d"


# --- files -------------------------------------------------------------------------------------


def test_files_refused_whole_and_gzip_read(source: Source) -> None:
    source.write_songs([{"track_id": "T1"}])
    source.add_streams([(1, "T1", "2026-01-05 10:00:00")], name="ok.csv.gz")
    bad_header = source.dir / "bad_header.csv"
    _write_csv(bad_header, ("user_id", "track", "listen_time"), [(1, "T1", "2026-01-05")])
    ragged = source.dir / "ragged.csv"
    ragged.write_text("user_id,track_id,listen_time\n1,T1,2026-01-05 10:00:00\n1,T1\n")
    reordered = source.dir / "reordered.csv"
    reordered.write_text("listen_time,extra,user_id,track_id\n\n2026-01-05 11:00:00,x,2,T1\n")
    source.streams += [bad_header, ragged, reordered]
    result = source.kpis()
    assert result.rejected_files == {str(bad_header): "missing_column", str(ragged): "not_csv"}
    assert (result.raw_rows, result.kept) == (2, 2)


def test_byte_order_mark_is_not_part_of_the_header(source: Source) -> None:
    bom = source.dir / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfuser_id,track_id,listen_time\n1,T1,2026-01-05 10:00:00\n")
    source.streams.append(bom)
    result = source.kpis()
    assert (result.rejected_files, result.raw_rows, result.kept) == ({}, 1, 1)


def test_a_required_column_named_twice_refuses_the_file(source: Source) -> None:
    twice = source.dir / "twice.csv"
    twice.write_text("user_id,track_id,listen_time,user_id\n1,T1,2026-01-05 10:00:00,2\n")
    extra_twice = source.dir / "extra_twice.csv"
    extra_twice.write_text("user_id,note,track_id,listen_time,note\n1,a,T1,2026-01-05,b\n")
    source.streams += [twice, extra_twice]
    result = source.kpis()
    assert result.rejected_files == {str(twice): "duplicate_column"}
    assert result.rejected == {"invalid_listen_time": 1}  # the extra column twice is fine


def test_latin1_bytes_and_binary_refuse_the_file(source: Source) -> None:
    latin1 = source.dir / "latin1.csv"
    latin1.write_bytes(b"user_id,track_id,listen_time\n1,caf\xe9,2026-01-05 10:00:00\n")
    junk = source.dir / "junk.csv"
    junk.write_bytes(bytes(range(256)) * 4)
    source.streams += [latin1, junk]
    result = source.kpis()
    assert result.rejected_files == {str(latin1): "not_csv", str(junk): "not_csv"}


def test_line_numbers_are_physical_lines(source: Source) -> None:
    """A quoted field spanning lines moves the rows after it down; a row spanning lines has
    the line it starts on; CRLF ends a line like LF; an empty line is a line."""
    path = source.dir / "quoted.csv"
    path.write_bytes(
        b"user_id,track_id,listen_time\r\n"
        b'1,"T\r\n1",2026-01-05 10:00:00\r\n'  # lines 2-3: kept
        b"x,T1,2026-01-05 10:00:00\r\n"  # line 4
        b'y,"a,\nb\nc",2026-01-05 10:00:00\r\n'  # lines 5-7
        b"\r\n"  # line 8: empty, skipped
        b"z,T1,2026-01-05 10:00:00"  # line 9, no newline at the end
    )
    source.streams.append(path)
    result = source.kpis()
    assert [(r.line, r.reason) for r in result.rejects] == [
        (4, "invalid_user_id"),
        (5, "invalid_user_id"),
        (9, "invalid_user_id"),
    ]
    assert result.genre_daily[0]["most_popular_track_id"] == "T\r\n1"


def test_a_one_megabyte_value_is_read(source: Source) -> None:
    path = source.dir / "long.csv"
    padded = "2026-01-05 10:00:00" + " " * 1_000_000
    path.write_text(f"user_id,track_id,listen_time\n1,T1,{padded}\n{'9' * 1_000_000},T1,x\n")
    source.streams.append(path)
    result = source.kpis()
    assert (result.rejected_files, result.kept) == ({}, 1)
    assert result.rejects == [ref.Reject(str(path), 3, "invalid_user_id")]


# --- re-delivered objects (the contract's "Re-delivered objects") ---------------------------------

HEADER = "user_id,track_id,listen_time\n"


def _csv(*rows: str) -> bytes:
    return (HEADER + "".join(row + "\n" for row in rows)).encode()


def _marts(result: ref.KpiResult) -> dict[str, list[dict[str, object]]]:
    return {name: result.rows(name) for name in ref.MARTS}


def test_a_correction_replaces_the_earlier_version(source: Source) -> None:
    """Same key, different content: only the latest version counts, exactly as if the earlier
    one had never arrived; an hour only the earlier version had disappears."""
    source.write_songs([{"track_id": "T1"}, {"track_id": "T2", "track_genre": "rock"}])
    v1 = _csv("1,T1,2026-01-05 10:00:00", "2,T1,2026-01-05 11:00:00", "x,T1,2026-01-05")
    v2 = _csv("1,T2,2026-01-05 10:00:00", "2,T2,2026-01-05 10:30:00")
    other = ref.Delivery("streams/b.csv", _csv("1,T1,2026-01-05 10:45:00"))
    first = ref.Delivery("streams/a.csv", v1)
    second = ref.Delivery("streams/a.csv", v2)
    result = ref.compute_kpis(source.users, source.songs, [first, other, second], LOADED_AT)
    fresh = ref.compute_kpis(source.users, source.songs, [second, other], LOADED_AT)
    assert _marts(result) == _marts(fresh)
    assert [row["listen_hour"] for row in result.hourly] == [datetime(2026, 1, 5, 10)]
    assert {row["track_genre"] for row in result.genre_daily} == {"pop", "rock"}
    assert (result.raw_rows, result.kept, result.rejected) == (3, 3, {})
    assert result.superseded == [("streams/a.csv", hashlib.md5(v1).hexdigest())]
    assert result.superseded_rows == 3
    assert result.raw_rows == result.kept + sum(result.rejected.values()) + result.duplicates


def test_the_same_content_again_is_a_no_op(source: Source) -> None:
    source.write_songs([{"track_id": "T1"}])
    data = _csv("1,T1,2026-01-05 10:00:00", "2,T1,2026-01-05 10:00:00")
    once = ref.Delivery("streams/a.csv", data)
    again = ref.Delivery("streams/a.csv", data)
    result = ref.compute_kpis(source.users, source.songs, [once, again, again], LOADED_AT)
    single = ref.compute_kpis(source.users, source.songs, [once], LOADED_AT)
    assert _marts(result) == _marts(single)
    assert (result.raw_rows, result.duplicates, result.superseded) == (2, 0, [])


def test_an_identical_redelivery_keeps_the_first_load_time(source: Source) -> None:
    """A no-op is not a new load: the future rule keeps using the first delivery's time."""
    data = _csv("1,T1,2026-01-08 00:00:00")
    early = ref.Delivery("streams/a.csv", data)
    late = ref.Delivery("streams/a.csv", data)
    loaded = {id(early): datetime(2026, 1, 6), id(late): datetime(2026, 1, 9)}
    result = ref.compute_kpis(
        source.users, source.songs, [early, late], lambda item: loaded[id(item)]
    )
    assert result.rejected == {"future_listen_time": 1}


def test_a_correction_uses_its_own_load_time(source: Source) -> None:
    early = ref.Delivery("streams/a.csv", _csv("1,T1,2026-01-08 00:00:00"))
    late = ref.Delivery("streams/a.csv", _csv("1,T1,2026-01-08 00:00:00", "2,T1,2026-01-05"))
    loaded = {id(early): datetime(2026, 1, 6), id(late): datetime(2026, 1, 9)}
    result = ref.compute_kpis(
        source.users, source.songs, [early, late], lambda item: loaded[id(item)]
    )
    assert (result.kept, result.rejected) == (1, {"invalid_listen_time": 1})


def test_different_keys_with_identical_content_are_duplicates(source: Source) -> None:
    source.write_songs([{"track_id": "T1"}])
    data = _csv("1,T1,2026-01-05 10:00:00", "2,T1,2026-01-05 10:00:00", "x,T1,2026-01-05")
    a, b = ref.Delivery("streams/a.csv", data), ref.Delivery("streams/b.csv", data)
    result = ref.compute_kpis(source.users, source.songs, [a, b], LOADED_AT)
    single = ref.compute_kpis(source.users, source.songs, [a], LOADED_AT)
    assert _marts(result) == _marts(single)
    assert (result.raw_rows, result.kept, result.duplicates) == (6, 2, 2)
    assert result.rejected == {"invalid_user_id": 2}
    assert [(Path(r.file).name, r.line) for r in result.rejects] == [("a.csv", 4), ("b.csv", 4)]
    assert result.superseded == []


def test_the_latest_version_counts_even_when_it_repeats_an_older_one(source: Source) -> None:
    v1 = _csv("1,T1,2026-01-05 10:00:00")
    v2 = _csv("1,T1,2026-01-05 11:00:00")
    versions = [ref.Delivery("streams/a.csv", data) for data in (v1, v2, v1)]
    result = ref.compute_kpis(source.users, source.songs, versions, LOADED_AT)
    assert [row["listen_hour"] for row in result.hourly] == [datetime(2026, 1, 5, 10)]
    md5 = [hashlib.md5(data).hexdigest() for data in (v1, v2)]
    assert result.superseded == [("streams/a.csv", md5[0]), ("streams/a.csv", md5[1])]
    assert result.superseded_rows == 2


def test_a_refused_later_version_supersedes_nothing(source: Source) -> None:
    """The contract's "Re-delivered objects": a later version that cannot be loaded at all is
    not a correction; the version before it keeps counting."""
    good = ref.Delivery("streams/a.csv", _csv("1,T1,2026-01-05 10:00:00"))
    refused = ref.Delivery("streams/a.csv", b"user_id,track\n1,T1\n")
    result = ref.compute_kpis(source.users, source.songs, [good, refused], LOADED_AT)
    assert (result.kept, result.rejected_files, result.superseded) == (1, {}, [])
    assert result.refused_redeliveries == [("streams/a.csv", "missing_column")]
    assert [row["listen_hour"] for row in result.hourly] == [datetime(2026, 1, 5, 10)]
    fixed = ref.Delivery("streams/a.csv", _csv("1,T1,2026-01-05 11:00:00"))
    result = ref.compute_kpis(source.users, source.songs, [good, refused, fixed], LOADED_AT)
    assert [row["listen_hour"] for row in result.hourly] == [datetime(2026, 1, 5, 11)]
    assert result.superseded == [("streams/a.csv", hashlib.md5(good.data()).hexdigest())]


def test_keys_that_are_not_stream_files_count_nothing(source: Source) -> None:
    """Suffixes in any case; other extensions, hidden and marker names count nothing."""
    data = _csv("1,T1,2026-01-05 10:00:00")
    keys = ["streams/A.CSV", "streams/b.csv.bak", "streams/.c.csv", "streams/_d.csv"]
    result = ref.compute_kpis(
        source.users, source.songs, [ref.Delivery(k, data) for k in keys], LOADED_AT
    )
    assert (result.raw_rows, result.kept) == (1, 1)
    gz = ref.Delivery("streams/e.Csv.Gz", gzip.compress(data))
    assert ref.compute_kpis(source.users, source.songs, [gz], LOADED_AT).kept == 1


def test_deliveries_read_bytes_paths_and_gzip(source: Source) -> None:
    """A Delivery holds bytes or a file; a .gz key is decompressed; a path is its own key."""
    source.write_songs([{"track_id": "T1"}])
    data = _csv("1,T1,2026-01-05 10:00:00", "x,T1,2026-01-05 10:00:00")
    on_disk = source.dir / "plain.csv"
    on_disk.write_bytes(data)
    items: list[ref.StreamInput] = [
        ref.Delivery("streams/z.csv.gz", gzip.compress(data)),
        ref.Delivery("streams/y.csv", on_disk),
        on_disk,
    ]
    result = ref.compute_kpis(source.users, source.songs, items, LOADED_AT)
    assert (result.raw_rows, result.kept, result.duplicates) == (6, 1, 2)
    assert [r.file for r in result.rejects] == ["streams/z.csv.gz", "streams/y.csv", str(on_disk)]
    # a path given twice is one key delivered twice with the same content: a no-op
    twice = ref.compute_kpis(source.users, source.songs, [on_disk, on_disk], LOADED_AT)
    assert (twice.raw_rows, twice.superseded) == (2, [])


# --- comparison --------------------------------------------------------------------------------

COLUMNS = ("listen_hour", "listen_count", "share", "name")
KEY = ("listen_hour",)
EXPECTED = [
    {"listen_hour": datetime(2026, 1, 5, 10), "listen_count": 3, "share": 0.1, "name": "x"},
    {"listen_hour": datetime(2026, 1, 5, 11), "listen_count": 4, "share": 0.2, "name": None},
]


def test_diff_rows_accepts_equal_rows_in_any_order_and_shape() -> None:
    aware = datetime(2026, 1, 5, 12, tzinfo=timezone(timedelta(hours=1)))  # 11:00 UTC
    actual: list[Sequence[object] | dict[str, object]] = [
        (aware, Decimal(4), 0.2 * (1 + 5e-10), None),
        {"listen_hour": datetime(2026, 1, 5, 10), "listen_count": 3, "share": 0.1, "name": "x"},
    ]
    assert ref.diff_rows(EXPECTED, actual, key=KEY, columns=COLUMNS) == []


@pytest.mark.parametrize(
    ("actual_row", "message"),
    [
        ((datetime(2026, 1, 5, 11), 4, 0.2 * (1 + 2e-9), None), "share: expected 0.2"),
        ((datetime(2026, 1, 5, 11), 4.0, 0.2, None), "listen_count: expected 4, got 4.0"),
        ((datetime(2026, 1, 5, 11), 4, 0.2, ""), "name: expected None, got ''"),
        ((datetime(2026, 1, 5, 11), 4, None, None), "share: expected 0.2, got None"),
        ((datetime(2026, 1, 5, 12), 4, 0.2, None), "missing row"),
    ],
)
def test_diff_rows_reports_differences(actual_row: tuple[object, ...], message: str) -> None:
    actual = [(datetime(2026, 1, 5, 10), 3, 0.1, "x"), actual_row]
    problems = ref.diff_rows(EXPECTED, actual, key=KEY, columns=COLUMNS)
    assert any(message in problem for problem in problems), problems


def test_assert_rows_match_lists_the_first_differences() -> None:
    actual = [(datetime(2026, 1, 5, h), h, 0.5, "y") for h in range(10, 20)]
    with pytest.raises(AssertionError) as error:
        ref.assert_rows_match(EXPECTED, actual, key=KEY, columns=COLUMNS, limit=3, label="hourly")
    text = str(error.value)
    assert text.startswith("hourly: 2 expected rows, 10 actual rows")
    assert "listen_count: expected 3, got 10" in text
    assert "more differences" in text
    ref.assert_rows_match(EXPECTED, [dict(row) for row in EXPECTED], key=KEY, columns=COLUMNS)


def test_marts_cover_the_contract_columns(source: Source) -> None:
    source.write_songs([{"track_id": "T1"}])
    source.add_streams([(1, "T1", "2026-01-05 10:00:00")])
    result = source.kpis()
    for name, spec in ref.MARTS.items():
        rows = result.rows(name)
        assert rows, name
        assert all(tuple(row) == spec.columns for row in rows), name
        ref.assert_rows_match(
            rows, [list(row.values()) for row in rows], key=spec.key, columns=spec.columns
        )
