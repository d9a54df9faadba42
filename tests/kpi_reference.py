"""An independent computation of the marts of the KPI contract, in plain Python.

The end-to-end tests compare the warehouse marts with this module. It is written from the
contract (``dbt_project/models/_contract__docs.md``) alone (no SQL, no DuckDB, no pandas) so
that a mistake in the dbt models cannot hide in the oracle too. Start with
:func:`compute_kpis`; compare with :func:`assert_rows_match`.

Choices where the contract leaves room (kept in step with the dbt project):

* Values are trimmed; a blank value is missing. A user id is an integer when it matches
  ``[+-]?[0-9]+`` and fits in 64 bits. ``listen_time`` is ``YYYY-MM-DD``, a space or ``T``,
  ``HH:MM:SS``, optionally ``.`` and 1-6 digits, optionally ``Z`` or ``+HH:MM`` / ``+HHMM`` /
  ``+HH`` (or ``-``); anything else (including a bare date) cannot be parsed.
* A row with several problems is rejected once, for the first reason in :data:`REJECT_REASONS`.
  Rejects are counted before de-duplication; duplicates only among kept rows.
* A file is refused whole (none of its rows count) when its header lacks a required column
  (``missing_column``), or it is not UTF-8 CSV with the header's number of fields on every row
  (``not_csv``). Empty lines are skipped.
* Songs with the same ``track_id``: highest ``popularity`` first (missing popularity last), then
  the smallest ``track_genre``, ``album_name``, ``track_name``, ``artists`` as UTF-8 bytes
  (missing text last).
* A known track whose genre is missing counts under ``unknown`` (like ``coalesce``); averages
  are over the plays with a known value (like SQL ``avg``), so they are null for ``unknown``.
* An artist named twice in one credit receives the play once.
* ``top_artist`` and ``top_artist_plays`` are null in an hour without plays of known tracks
  that credit an artist.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

UNKNOWN_GENRE = "unknown"
REQUIRED_STREAM_COLUMNS = ("user_id", "track_id", "listen_time")

# Row reject reasons, in the order they are checked.
REJECT_REASONS = (
    "missing_user_id",
    "missing_track_id",
    "invalid_user_id",
    "invalid_listen_time",
    "future_listen_time",
)

GENRE_DAILY_COLUMNS = (
    "listen_date",
    "track_genre",
    "listen_count",
    "unique_listeners",
    "avg_track_duration_sec",
    "avg_popularity",
    "popularity_index",
    "most_popular_track_id",
    "most_popular_track_name",
    "most_popular_track_plays",
)
HOURLY_COLUMNS = (
    "listen_hour",
    "listen_date",
    "hour_of_day",
    "listen_count",
    "unique_listeners",
    "distinct_tracks",
    "track_diversity_index",
    "top_artist",
    "top_artist_plays",
)
TOP_ARTISTS_COLUMNS = ("listen_hour", "artist_rank", "artist_name", "listen_count")


@dataclass(frozen=True)
class MartSpec:
    """A mart's grain (``key``) and its columns, in contract order."""

    key: tuple[str, ...]
    columns: tuple[str, ...]


MARTS = {
    "fct_genre_kpis_daily": MartSpec(("listen_date", "track_genre"), GENRE_DAILY_COLUMNS),
    "fct_listening_kpis_hourly": MartSpec(("listen_hour",), HOURLY_COLUMNS),
    "fct_top_artists_hourly": MartSpec(("listen_hour", "artist_rank"), TOP_ARTISTS_COLUMNS),
}

_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?",
    re.ASCII,
)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)


@dataclass(frozen=True)
class Song:
    """The one row kept for a ``track_id``."""

    track_id: str
    artists: tuple[str, ...]
    track_name: str | None
    popularity: int | None
    duration_ms: int | None
    track_genre: str | None


@dataclass(frozen=True)
class Reject:
    """A rejected stream row: its file, 1-based physical line (header = 1) and reason."""

    file: str
    line: int
    reason: str


@dataclass
class KpiResult:
    """The three marts as lists of dicts sorted by grain, plus row accounting."""

    genre_daily: list[dict[str, Any]]
    hourly: list[dict[str, Any]]
    top_artists: list[dict[str, Any]]
    raw_rows: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)
    rejected_files: dict[str, str] = field(default_factory=dict)
    duplicates: int = 0
    kept: int = 0
    unknown_track_plays: int = 0
    unknown_user_plays: int = 0
    song_rows: int = 0
    duplicate_song_rows: int = 0

    def rows(self, mart: str) -> list[dict[str, Any]]:
        """The expected rows of ``mart`` (a key of :data:`MARTS`)."""
        tables = {
            "fct_genre_kpis_daily": self.genre_daily,
            "fct_listening_kpis_hourly": self.hourly,
            "fct_top_artists_hourly": self.top_artists,
        }
        return tables[mart]


# --- parsing ---------------------------------------------------------------------------------


def clean(value: str | None) -> str | None:
    """Trim a raw value; blank becomes ``None``."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def parse_user_id(value: str | None) -> int | None:
    """The integer in a trimmed user id, or ``None`` if it is not a 64-bit integer."""
    if value is None or not _INTEGER.fullmatch(value):
        return None
    number = int(value)
    return number if -(2**63) <= number < 2**63 else None


def parse_listen_time(value: str | None) -> datetime | None:
    """The UTC instant (aware ``datetime``) a trimmed ``listen_time`` means, or ``None``."""
    if value is None:
        return None
    match = _TIME.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "").ljust(6, "0"))
    tz = UTC
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or 0)
        if hours > 23 or minutes > 59:
            return None
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        local = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tz
        )
    except ValueError:
        return None
    return local.astimezone(UTC)


def split_artists(credit: str | None) -> tuple[str, ...]:
    """Credited artist names: split on ``;``, trimmed, empty names dropped, each name once."""
    names: list[str] = []
    for part in (credit or "").split(";"):
        name = part.strip()
        if name and name not in names:
            names.append(name)
    return tuple(names)


def _int_or_none(value: str | None) -> int | None:
    return parse_user_id(value)


def _text_key(value: str | None) -> tuple[bool, bytes]:
    return (value is None, (value or "").encode())


def read_songs(songs_csv: Path) -> tuple[dict[str, Song], int]:
    """One :class:`Song` per ``track_id`` (duplicates resolved), and the number of rows read."""
    best: dict[str, tuple[Any, Song]] = {}
    rows = 0
    with songs_csv.open(encoding="utf-8", newline="") as handle:
        for raw in csv.DictReader(handle):
            rows += 1
            track_id = clean(raw.get("track_id"))
            if track_id is None:
                continue
            popularity = _int_or_none(clean(raw.get("popularity")))
            genre = clean(raw.get("track_genre"))
            album = clean(raw.get("album_name"))
            name = clean(raw.get("track_name"))
            credit = clean(raw.get("artists"))
            rank = (
                popularity is None,
                -(popularity or 0),
                _text_key(genre),
                _text_key(album),
                _text_key(name),
                _text_key(credit),
            )
            song = Song(
                track_id=track_id,
                artists=split_artists(credit),
                track_name=name,
                popularity=popularity,
                duration_ms=_int_or_none(clean(raw.get("duration_ms"))),
                track_genre=genre,
            )
            if track_id not in best or rank < best[track_id][0]:
                best[track_id] = (rank, song)
    return {track_id: song for track_id, (_, song) in best.items()}, rows


def read_user_ids(users_csv: Path) -> set[int]:
    """The user ids present in the users table."""
    with users_csv.open(encoding="utf-8", newline="") as handle:
        ids = (parse_user_id(clean(row.get("user_id"))) for row in csv.DictReader(handle))
        return {user_id for user_id in ids if user_id is not None}


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return io.TextIOWrapper(path.open("rb"), encoding="utf-8", newline="")


def _file_problem(path: Path) -> str | None:
    """Why the loader would refuse the whole file, or ``None``."""
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle, strict=True)
            header = [column.strip() for column in next(reader, [])]
            if any(column not in header for column in REQUIRED_STREAM_COLUMNS):
                return "missing_column"
            for row in reader:
                if row and len(row) != len(header):
                    return "not_csv"
    except (UnicodeDecodeError, csv.Error, OSError, EOFError):
        return "not_csv"
    return None


def _stream_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = [column.strip() for column in next(reader)]
        for row in reader:
            if row:
                yield reader.line_num, dict(zip(header, row, strict=True))


# --- aggregation -----------------------------------------------------------------------------


@dataclass
class _GenreDay:
    plays: int = 0
    users: set[int] = field(default_factory=set)
    duration_ms_sum: int = 0
    duration_n: int = 0
    popularity_sum: int = 0
    popularity_n: int = 0
    track_plays: Counter[str] = field(default_factory=Counter)


@dataclass
class _Hour:
    plays: int = 0
    users: set[int] = field(default_factory=set)
    tracks: set[str] = field(default_factory=set)
    artist_plays: Counter[str] = field(default_factory=Counter)


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def compute_kpis(
    users_csv: Path,
    songs_csv: Path,
    stream_files: Iterable[Path],
    loaded_at: datetime | Callable[[Path], datetime],
) -> KpiResult:
    """Compute the three KPI marts of the contract from the source files.

    ``loaded_at`` is the load time (naive means UTC), or a function giving it per stream file:
    a play later than load time + 1 day is rejected.
    """
    songs, song_rows = read_songs(songs_csv)
    known_users = read_user_ids(users_csv)
    result = KpiResult(genre_daily=[], hourly=[], top_artists=[], song_rows=song_rows)
    result.duplicate_song_rows = song_rows - len(songs)
    rejected: Counter[str] = Counter()
    seen: set[tuple[int, str, datetime]] = set()
    genre_days: dict[tuple[date, str], _GenreDay] = {}
    day_plays: Counter[date] = Counter()
    hours: dict[datetime, _Hour] = {}

    for path in stream_files:
        problem = _file_problem(path)
        if problem is not None:
            result.rejected_files[str(path)] = problem
            continue
        file_loaded_at = _as_utc(loaded_at(path) if callable(loaded_at) else loaded_at)
        latest = file_loaded_at + timedelta(days=1)
        for line, raw in _stream_rows(path):
            result.raw_rows += 1
            user_text = clean(raw["user_id"])
            track_id = clean(raw["track_id"])
            user_id = parse_user_id(user_text)
            instant = parse_listen_time(clean(raw["listen_time"]))
            reason = None
            if user_text is None:
                reason = "missing_user_id"
            elif track_id is None:
                reason = "missing_track_id"
            elif user_id is None:
                reason = "invalid_user_id"
            elif instant is None:
                reason = "invalid_listen_time"
            elif instant > latest:
                reason = "future_listen_time"
            if reason is not None:
                rejected[reason] += 1
                result.rejects.append(Reject(str(path), line, reason))
                continue
            assert user_id is not None and track_id is not None and instant is not None
            key = (user_id, track_id, instant)
            if key in seen:
                result.duplicates += 1
                continue
            seen.add(key)
            result.kept += 1
            result.unknown_user_plays += user_id not in known_users

            song = songs.get(track_id)
            result.unknown_track_plays += song is None
            genre = (song.track_genre if song else None) or UNKNOWN_GENRE
            listen_date = instant.date()
            group = genre_days.setdefault((listen_date, genre), _GenreDay())
            group.plays += 1
            group.users.add(user_id)
            group.track_plays[track_id] += 1
            if song is not None and song.duration_ms is not None:
                group.duration_ms_sum += song.duration_ms
                group.duration_n += 1
            if song is not None and song.popularity is not None:
                group.popularity_sum += song.popularity
                group.popularity_n += 1
            day_plays[listen_date] += 1

            listen_hour = instant.replace(minute=0, second=0, microsecond=0, tzinfo=None)
            hour = hours.setdefault(listen_hour, _Hour())
            hour.plays += 1
            hour.users.add(user_id)
            hour.tracks.add(track_id)
            for artist in song.artists if song else ():
                hour.artist_plays[artist] += 1

    result.rejected = {reason: rejected[reason] for reason in REJECT_REASONS if rejected[reason]}
    result.genre_daily = _genre_daily_rows(genre_days, day_plays, songs)
    result.hourly, result.top_artists = _hourly_rows(hours)
    return result


def _popularity_of(track_id: str, songs: Mapping[str, Song]) -> int | None:
    song = songs.get(track_id)
    return song.popularity if song else None


def _genre_daily_rows(
    genre_days: Mapping[tuple[date, str], _GenreDay],
    day_plays: Mapping[date, int],
    songs: Mapping[str, Song],
) -> list[dict[str, Any]]:
    rows = []
    for (listen_date, genre), group in sorted(
        genre_days.items(), key=lambda item: (item[0][0], item[0][1].encode())
    ):

        def rank(item: tuple[str, int]) -> tuple[int, bool, int, bytes]:
            track_id, plays = item
            popularity = _popularity_of(track_id, songs)
            return (-plays, popularity is None, -(popularity or 0), track_id.encode())

        top_track, top_plays = min(group.track_plays.items(), key=rank)
        top_song = songs.get(top_track)
        rows.append(
            {
                "listen_date": listen_date,
                "track_genre": genre,
                "listen_count": group.plays,
                "unique_listeners": len(group.users),
                "avg_track_duration_sec": (
                    group.duration_ms_sum / (1000.0 * group.duration_n)
                    if group.duration_n
                    else None
                ),
                "avg_popularity": (
                    group.popularity_sum / group.popularity_n if group.popularity_n else None
                ),
                "popularity_index": group.plays / day_plays[listen_date],
                "most_popular_track_id": top_track,
                "most_popular_track_name": top_song.track_name if top_song else None,
                "most_popular_track_plays": top_plays,
            }
        )
    return rows


def _hourly_rows(
    hours: Mapping[datetime, _Hour],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    hourly: list[dict[str, Any]] = []
    top: list[dict[str, Any]] = []
    for listen_hour in sorted(hours):
        hour = hours[listen_hour]
        ranked = sorted(hour.artist_plays.items(), key=lambda item: (-item[1], item[0].encode()))
        hourly.append(
            {
                "listen_hour": listen_hour,
                "listen_date": listen_hour.date(),
                "hour_of_day": listen_hour.hour,
                "listen_count": hour.plays,
                "unique_listeners": len(hour.users),
                "distinct_tracks": len(hour.tracks),
                "track_diversity_index": len(hour.tracks) / hour.plays,
                "top_artist": ranked[0][0] if ranked else None,
                "top_artist_plays": ranked[0][1] if ranked else None,
            }
        )
        top.extend(
            {
                "listen_hour": listen_hour,
                "artist_rank": rank,
                "artist_name": name,
                "listen_count": plays,
            }
            for rank, (name, plays) in enumerate(ranked[:5], start=1)
        )
    return hourly, top


# --- comparison ------------------------------------------------------------------------------


def _normalize(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _same(expected: Any, actual: Any, rel_tol: float) -> bool:
    expected, actual = _normalize(expected), _normalize(actual)
    if expected is None or actual is None:
        return expected is None and actual is None
    if isinstance(expected, float):
        if isinstance(actual, bool) or not isinstance(actual, float | int | Decimal):
            return False
        return expected == float(actual) or math.isclose(expected, float(actual), rel_tol=rel_tol)
    if isinstance(expected, int) and not isinstance(expected, bool):
        if isinstance(actual, Decimal):
            return actual == expected
        return isinstance(actual, int) and not isinstance(actual, bool) and actual == expected
    return type(expected) is type(actual) and bool(expected == actual)


def diff_rows(
    expected: Sequence[Mapping[str, Any]],
    actual: Iterable[Mapping[str, Any] | Sequence[Any]],
    *,
    key: Sequence[str],
    columns: Sequence[str],
    rel_tol: float = 1e-9,
    limit: int = 20,
) -> list[str]:
    """Differences between expected and actual rows, matched on ``key``; empty when equal.

    ``actual`` rows are mappings, or sequences in ``columns`` order (as a DB cursor returns
    them). Floats compare with relative tolerance ``rel_tol``, everything else exactly (an
    aware timestamp is compared as naive UTC). At most ``limit`` differences are described.
    """
    problems: list[str] = []
    actual_by_key: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for row in actual:
        mapping = row if isinstance(row, Mapping) else dict(zip(columns, row, strict=True))
        row_key = tuple(_normalize(mapping.get(column)) for column in key)
        if row_key in actual_by_key:
            problems.append(f"duplicate key in actual rows: {row_key}")
        actual_by_key[row_key] = mapping
    expected_keys = set()
    for row in expected:
        row_key = tuple(row[column] for column in key)
        expected_keys.add(row_key)
        got = actual_by_key.get(row_key)
        if got is None:
            problems.append(f"missing row {row_key}: expected {_show(row, columns)}")
            continue
        for column in columns:
            if column not in got:
                problems.append(f"{row_key}: column {column} absent from actual rows")
            elif not _same(row[column], got[column], rel_tol):
                problems.append(
                    f"{row_key} {column}: expected {row[column]!r}, got {got[column]!r}"
                )
    for row_key, row in actual_by_key.items():
        if row_key not in expected_keys:
            problems.append(f"unexpected row {row_key}: {_show(row, columns)}")
    if len(problems) > limit:
        problems = [*problems[:limit], f"... and {len(problems) - limit} more differences"]
    return problems


def assert_rows_match(
    expected: Sequence[Mapping[str, Any]],
    actual: Iterable[Mapping[str, Any] | Sequence[Any]],
    *,
    key: Sequence[str],
    columns: Sequence[str],
    rel_tol: float = 1e-9,
    limit: int = 20,
    label: str = "rows",
) -> None:
    """Raise ``AssertionError`` listing the first differences found by :func:`diff_rows`."""
    actual_rows = list(actual)
    problems = diff_rows(
        expected, actual_rows, key=key, columns=columns, rel_tol=rel_tol, limit=limit
    )
    if problems:
        header = f"{label}: {len(expected)} expected rows, {len(actual_rows)} actual rows"
        raise AssertionError("\n  ".join([header, *problems]))


def _show(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    return ", ".join(f"{column}={row.get(column)!r}" for column in columns)
