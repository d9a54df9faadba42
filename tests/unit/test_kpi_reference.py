"""Hand-computed cases for every rule and tie-break of the KPI reference (the KPI contract in
dbt_project/models/_contract__docs.md)."""

from __future__ import annotations

import csv
import gzip
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
    ],
)
def test_parse_user_id(text: str | None, expected: int | None) -> None:
    assert ref.parse_user_id(text) == expected


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
