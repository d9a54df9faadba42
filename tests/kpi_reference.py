"""An independent computation of the marts of the KPI contract, in plain Python.

The end-to-end tests compare the warehouse marts with this module. It is written from the
contract (``dbt_project/models/_contract__docs.md``) alone (no SQL, no
DuckDB, no pandas) so that a mistake in the dbt models cannot hide in the oracle too. Start with
:func:`compute_kpis`; compare with :func:`assert_rows_match`.

The contract's exact value formats, as implemented here:

* Values are trimmed of ASCII whitespace only (space, tab, CR, LF, VT, FF; not a no-break space
  or other Unicode spaces); an empty result is missing.
* ``user_id``: ``[+-]?[0-9]+`` (ASCII digits) whose value fits in a signed 64-bit integer.
* ``listen_time``: ``YYYY-MM-DD``, a space or ``T``, ``HH:MM:SS``, optionally ``.`` and 1-6
  digits, optionally ``Z`` or ``+HH`` / ``+HHMM`` / ``+HH:MM`` (or ``-``), converted to UTC; it
  must name a real calendar time (no 30 February, no hour 24, no second 60).

Re-delivered objects (the contract's "Re-delivered objects"): :func:`compute_kpis` takes the
deliveries in the order they arrived, each a :class:`Delivery` (key, content) or a plain path
(its key is the path). The latest version of each key counts and earlier versions of that key
are ignored (they stay in raw, marked superseded: :attr:`KpiResult.superseded`); the same key
with the same content again is a no-op; different keys are different deliveries, so the plays
they share are exact duplicates and count once.

Choices where the contract leaves room (kept in step with the dbt project):

* A row with several problems is rejected once, for the first reason in :data:`REJECT_REASONS`.
  Rejects are counted before de-duplication; duplicates only among kept rows.
* A file is refused whole (none of its rows count) when its header lacks a required column
  (``missing_column``), names a required column twice (``duplicate_column``: which one would
  count is ambiguous), or it is not UTF-8 CSV with the header's number of fields on every row
  (``not_csv``). A UTF-8 byte order mark before the header is not part of it. Empty lines are
  skipped. A zone offset must be below 24 hours (``+HH`` at most 23, minutes at most 59).
* A row's line is the physical line it starts on (header = 1), also after a quoted field that
  spans lines.
* A later version of a key that is refused whole is not a correction: it supersedes nothing
  and the version before it keeps counting (the contract's "Re-delivered objects").
* Keys are literal names (:func:`is_stream_key`): a delivery whose key does not end in ``.csv``
  or ``.csv.gz`` (compared without regard to case), or whose name starts with ``.`` or ``_``
  (markers, temporary files), is not a stream file: it counts nothing. A file with a physical
  line longer than 64 MiB is refused whole (``line_too_long``).
* Songs with the same ``track_id``: highest ``popularity`` first (missing popularity last), then
  the smallest ``track_genre``, ``album_name``, ``track_name``, ``artists`` as UTF-8 bytes
  (missing text last), then the smallest ``duration_ms`` (missing last).
* A known track whose genre is missing counts under ``unknown`` (like ``coalesce``); averages
  are over the plays with a known value (like SQL ``avg``), so they are null for ``unknown``.
* An artist named twice in one credit receives the play once.
* ``top_artist`` and ``top_artist_plays`` are null in an hour without plays of known tracks
  that credit an artist.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

UNKNOWN_GENRE = "unknown"
ASCII_WHITESPACE = " \t\n\r\v\f"
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

# A value may be as long as a line can be (the contract sets no limit; the default is 128 KiB).
csv.field_size_limit(2**31 - 1)
MAX_LINE_BYTES = 64 << 20  # the contract's longest line


def is_stream_key(key: str) -> bool:
    """Whether ``key`` names a stream file (the contract's "Keys and files")."""
    name = key.rsplit("/", 1)[-1]
    return not name.startswith((".", "_")) and name.lower().endswith((".csv", ".csv.gz"))


def is_gzip_key(key: str) -> bool:
    """Whether a delivery is gzip-compressed: its key ends in ``.gz``, in any case."""
    return key.lower().endswith(".gz")


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
class Delivery:
    """One delivered version of a stream object: its key in the landing zone and its content
    (the bytes as delivered, or a file holding them). A ``.gz`` key is gzip-compressed."""

    key: str
    content: bytes | Path

    def data(self) -> bytes:
        """The delivered bytes."""
        return self.content if isinstance(self.content, bytes) else self.content.read_bytes()


StreamInput = Path | Delivery
"""What :func:`compute_kpis` takes per delivery: a :class:`Delivery`, or a path (key = path)."""


@dataclass(frozen=True)
class Reject:
    """A rejected stream row: its file (the path, or the key of a :class:`Delivery`), the
    1-based physical line it starts on (header = 1) and its reason."""

    file: str
    line: int
    reason: str


@dataclass
class KpiResult:
    """The three marts as lists of dicts sorted by grain, plus row accounting.

    ``raw_rows`` counts the rows of the versions that count (the latest of each key), so
    ``raw_rows == kept + sum(rejected.values()) + duplicates``; raw also keeps the
    ``superseded_rows`` of earlier versions. ``superseded`` names each replaced version (file,
    as in :class:`Reject`, and the MD5 of its bytes, which is the landing zone's etag of a
    single-part object), in delivery order.
    """

    genre_daily: list[dict[str, Any]]
    hourly: list[dict[str, Any]]
    top_artists: list[dict[str, Any]]
    raw_rows: int = 0
    superseded: list[tuple[str, str]] = field(default_factory=list)
    superseded_rows: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)
    rejected_files: dict[str, str] = field(default_factory=dict)
    # (key, problem): later versions refused whole, which superseded nothing
    refused_redeliveries: list[tuple[str, str]] = field(default_factory=list)
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
    """Trim ASCII whitespace (space, tab, CR, LF, VT, FF) off a raw value; blank becomes
    ``None``. Other whitespace (a no-break space, U+2003, ...) is part of the value."""
    if value is None:
        return None
    value = value.strip(ASCII_WHITESPACE)
    return value or None


def parse_user_id(value: str | None) -> int | None:
    """The integer in a trimmed user id, or ``None`` if it is not a 64-bit integer."""
    if value is None or not _INTEGER.fullmatch(value):
        return None
    if len(value.lstrip("+-").lstrip("0")) > 19:
        return None  # more digits than any 64-bit value (and than int() converts unasked)
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
            duration_ms = _int_or_none(clean(raw.get("duration_ms")))
            rank = (
                popularity is None,
                -(popularity or 0),
                _text_key(genre),
                _text_key(album),
                _text_key(name),
                _text_key(credit),
                duration_ms is None,
                duration_ms or 0,
            )
            song = Song(
                track_id=track_id,
                artists=split_artists(credit),
                track_name=name,
                popularity=popularity,
                duration_ms=duration_ms,
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


def _open_text(delivery: Delivery) -> io.TextIOBase:
    """The delivery's text (UTF-8; a byte order mark before the header is dropped)."""
    raw: IO[bytes] = (
        io.BytesIO(delivery.content)
        if isinstance(delivery.content, bytes)
        else delivery.content.open("rb")
    )
    if is_gzip_key(delivery.key):
        raw = gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _header(reader: Iterator[list[str]]) -> list[str]:
    return [column.strip(ASCII_WHITESPACE) for column in next(reader, [])]


def _longest_line(delivery: Delivery) -> int:
    """The length in bytes of the delivery's longest physical line (decompressed)."""
    raw: IO[bytes] = (
        io.BytesIO(delivery.content)
        if isinstance(delivery.content, bytes)
        else delivery.content.open("rb")
    )
    longest = current = 0
    with gzip.GzipFile(fileobj=raw) if is_gzip_key(delivery.key) else raw as stream:
        while chunk := stream.read(1 << 20):
            parts = chunk.split(b"\n")
            current += len(parts[0])
            if len(parts) > 1:
                longest = max(longest, current, *(len(part) for part in parts[1:-1]))
                current = len(parts[-1])
    return max(longest, current)


def _file_problem(delivery: Delivery) -> str | None:
    """Why the loader would refuse the whole file, or ``None``."""
    try:
        if _longest_line(delivery) > MAX_LINE_BYTES:
            return "line_too_long"
        with _open_text(delivery) as handle:
            reader = csv.reader(handle, strict=True)
            header = _header(reader)
            if any(column not in header for column in REQUIRED_STREAM_COLUMNS):
                return "missing_column"
            if any(header.count(column) > 1 for column in REQUIRED_STREAM_COLUMNS):
                return "duplicate_column"
            for row in reader:
                if row and len(row) != len(header):
                    return "not_csv"
    except (UnicodeDecodeError, csv.Error, OSError, EOFError):
        return "not_csv"
    return None


def _stream_rows(delivery: Delivery) -> Iterator[tuple[int, dict[str, str]]]:
    """Each data row with the physical line it starts on (header = 1)."""
    with _open_text(delivery) as handle:
        reader = csv.reader(handle)
        header = _header(reader)
        start = reader.line_num + 1
        for row in reader:
            if row:
                yield start, dict(zip(header, row, strict=True))
            start = reader.line_num + 1


def _as_delivery(item: StreamInput) -> Delivery:
    return item if isinstance(item, Delivery) else Delivery(str(item), item)


def current_versions(
    stream_files: Iterable[StreamInput],
) -> tuple[list[StreamInput], list[StreamInput]]:
    """The deliveries that count and the superseded ones (:func:`classify_versions`)."""
    current, superseded, _unloadable = classify_versions(stream_files)
    return current, superseded


def classify_versions(
    stream_files: Iterable[StreamInput],
) -> tuple[list[StreamInput], list[StreamInput], list[StreamInput]]:
    """The deliveries that count, the superseded ones, and the unloadable re-deliveries,
    applying the contract's rule for re-delivered objects to ``stream_files`` in delivery
    order (deliveries whose key is not a stream file are left out: :func:`is_stream_key`).

    The latest version of each key counts (in the position of the key's first delivery); the
    same key with the same bytes again is a no-op (the earlier delivery stays, with its load
    time); the same key with other bytes supersedes the version before it, unless the new
    bytes cannot be loaded at all: that version is refused and supersedes nothing.
    """
    current: dict[str, tuple[StreamInput, bytes]] = {}
    superseded: list[StreamInput] = []
    unloadable: list[StreamInput] = []
    for item in stream_files:
        delivery = _as_delivery(item)
        if not is_stream_key(delivery.key):
            continue  # not a stream file: skipped, never loaded
        data = delivery.data()
        earlier = current.get(delivery.key)
        if earlier is not None and earlier[1] == data:
            continue  # identical re-delivery: nothing changes
        if earlier is not None:
            if _file_problem(delivery) is not None:
                unloadable.append(item)  # not a correction: the version before stays
                continue
            superseded.append(earlier[0])
        current[delivery.key] = (item, data)
    return [item for item, _ in current.values()], superseded, unloadable


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
    stream_files: Iterable[StreamInput],
    loaded_at: datetime | Callable[[Any], datetime],
) -> KpiResult:
    """Compute the three KPI marts of the contract from the source files.

    ``stream_files`` are the deliveries in the order they arrived: paths (each its own key) or
    :class:`Delivery` versions; a key delivered again with other content replaces its earlier
    version (:func:`current_versions`). ``loaded_at`` is the load time (naive means UTC), or a
    function giving it per delivery (called with the item as given): a play later than load
    time + 1 day is rejected.
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

    counted, superseded, unloadable = classify_versions(stream_files)
    for item in unloadable:
        delivery = _as_delivery(item)
        result.refused_redeliveries.append((delivery.key, _file_problem(delivery) or ""))
    for item in superseded:
        delivery = _as_delivery(item)
        result.superseded.append((delivery.key, _md5(delivery.data())))
        if _file_problem(delivery) is None:
            result.superseded_rows += sum(1 for _ in _stream_rows(delivery))

    for item in counted:
        delivery = _as_delivery(item)
        problem = _file_problem(delivery)
        if problem is not None:
            result.rejected_files[delivery.key] = problem
            continue
        file_loaded_at = _as_utc(loaded_at(item) if callable(loaded_at) else loaded_at)
        latest = file_loaded_at + timedelta(days=1)
        for line, raw in _stream_rows(delivery):
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
                result.rejects.append(Reject(delivery.key, line, reason))
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


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


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
