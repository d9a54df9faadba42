"""Deterministic, realistic source data: ``users.csv``, ``songs.csv`` and ``streams/*.csv[.gz]``.

The data set imitates what the pipeline meets in production (see the KPI contract,
``dbt_project/models/_contract__docs.md``): a Spotify-style songs table with every
audio-feature column, duplicated ``track_id`` rows, multi-artist credits, non-ASCII text and
CSV-quoted names; stream files with skewed track popularity, a daily cycle, a few timestamp
formats, late files, a file copied under another name, duplicate plays and malformed rows.

Users and songs are small and are written row by row. Stream files are written by DuckDB
(``COPY (select ... from range(n)) TO ...``): every field is a function of a 32-bit hash of
``(seed, row index)``, so each file is generated independently, in order, with flat memory,
and the same arguments always give byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
import math
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb

__all__ = [
    "GENRES",
    "SONG_COLUMNS",
    "STREAM_COLUMNS",
    "USER_COLUMNS",
    "GenerateSummary",
    "generate",
]

USER_COLUMNS = ("user_id", "user_name", "user_age", "user_country", "created_at")
SONG_COLUMNS = (
    "id",
    "track_id",
    "artists",
    "album_name",
    "track_name",
    "popularity",
    "duration_ms",
    "explicit",
    "danceability",
    "energy",
    "key",
    "loudness",
    "mode",
    "speechiness",
    "acousticness",
    "instrumentalness",
    "liveness",
    "valence",
    "tempo",
    "time_signature",
    "track_genre",
)
STREAM_COLUMNS = ("user_id", "track_id", "listen_time")

GENRES = (
    "acoustic", "afrobeat", "alt-rock", "alternative", "ambient", "anime", "black-metal",
    "bluegrass", "blues", "bossanova", "brazil", "breakbeat", "british", "cantopop",
    "chicago-house", "children", "chill", "classical", "club", "comedy", "country", "dance",
    "dancehall", "death-metal", "deep-house", "detroit-techno", "disco", "disney",
    "drum-and-bass", "dub", "dubstep", "edm", "electro", "electronic", "emo", "folk", "forró",
    "french", "funk", "garage", "german", "gospel", "goth", "grindcore", "groove", "grunge",
    "guitar", "happy", "hard-rock", "hardcore", "hardstyle", "heavy-metal", "hip-hop",
    "honky-tonk", "house", "idm", "indian", "indie", "indie-pop", "industrial", "iranian",
    "j-dance", "j-idol", "j-pop", "j-rock", "jazz", "k-pop", "kids", "latin", "latino", "malay",
    "mandopop", "metal", "metalcore", "minimal-techno", "mpb", "new-age", "opera", "pagode",
    "party", "piano", "pop", "pop-film", "power-pop", "progressive-house", "psych-rock", "punk",
    "punk-rock", "r-n-b", "reggae", "reggaeton", "rock", "rock-n-roll", "rockabilly", "romance",
    "sad", "salsa", "samba", "schlager", "sertanejo", "show-tunes", "singer-songwriter", "ska",
    "sleep", "songwriter", "soul", "spanish", "study", "swedish", "synth-pop", "tango", "techno",
    "trance", "trip-hop", "turkish", "world-music",
)  # fmt: skip

_FIRST = (
    "Ana", "José", "Zoë", "Søren", "Łukasz", "Chloé", "Jürgen", "Ngozi", "Mateo", "Aiko",
    "Björn", "Renée", "Ömer", "Priya", "Liam", "Maëlle", "Dmitri", "Inés", "Kenji", "Ama",
    "Noah", "Fatima", "Yuki", "Nikolaj", "Sofía", "Ilse", "Tomás", "Mei", "Ørjan", "Zsófia",
)  # fmt: skip
_LAST = (
    "Müller", "García", "Núñez", "O'Connor", "Dvořák", "Åberg", "Ødegaard", "Çelik", "Nguyễn",
    "Kowalczyk", "田中", "Smith", "Foy", "Dubois", "Straße", "Rossi", "Kim", "Okafor", "Silva",
    "Johansson", "山本", "Novák", "Papadopoulos", "Costa", "Schäfer", "Ivanova", "Lefèvre",
)  # fmt: skip
_ADJ = (
    "Silent", "Golden", "Électrique", "Neon", "Velvet", "Große", "Midnight", "Crystal", "Wild",
    "Lost", "Broken", "Северный", "東京", "Blue", "Saint", "Little", "Ñandú", "Hollow", "Café",
    "Paper", "Electric", "Gentle", "Fjäll", "Cosmic", "Rusty", "日本", "Señor", "Bright",
)  # fmt: skip
_NOUN = (
    "Wolves", "Échos", "Straße", "Rivers", "Foxes", "Hearts", "Kings", "Lights", "夜", "Drifters",
    "Machines", "Orchestra", "Collective", "Trio", "Ensemble", "🔥", "Fjords", "Garçons", "Dreams",
    "Satellites", "Mädchen", "Tides", "Ghosts", "Sparrows", "Ruins", "Cowboys", "Parade",
)  # fmt: skip
_COUNTRIES = (
    ("US", 20), ("BR", 9), ("GB", 7), ("DE", 7), ("MX", 6), ("FR", 5), ("IN", 5), ("JP", 4),
    ("ES", 4), ("CA", 4), ("IT", 3), ("SE", 3), ("NL", 3), ("PL", 3), ("AR", 3), ("TR", 2),
    ("NG", 2), ("KR", 2), ("AU", 2), ("CO", 2), ("ID", 2), ("NO", 1), ("DK", 1), ("PT", 1),
    ("CZ", 1), ("VN", 1), ("ZA", 1), ("CL", 1), ("GR", 1), ("UA", 1),
)  # fmt: skip

# Plays per hour of day (UTC), relative: quiet night, morning commute, evening peak.
_HOUR_WEIGHTS = (
    30, 19, 12, 9, 8, 10, 18, 34, 52, 58, 60, 63, 70, 68, 66, 69, 74, 84, 95, 104, 110, 100, 78, 49,
)  # fmt: skip
# Plays per weekday (Monday first), relative: weekends a bit busier.
_WEEKDAY_WEIGHTS = (100, 97, 98, 101, 108, 118, 114)

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1
_MIX1 = 0x85EBCA6B
_MIX2 = 0xC2B2AE35

_ROWS_PER_FILE = 1_000_000  # a producer's file holds at most this many plays
_MIN_PARTS_PER_DAY = 4
_TRACK_SKEW = 2.6  # rank = floor(T * u ** skew): Zipf-like, the top track gets ~4 % of plays
_USER_SKEW = 1.8
_UNKNOWN_TRACK_POOL = 40
_PERMILLE_UNKNOWN_TRACK = 5
_PERMILLE_UNKNOWN_USER = 3
_PERMILLE_DUPLICATE = 1
_LATE_SHARE = 40  # 1/40 of every day's plays arrive in a later file

# Malformed-row kinds, one of each per anomaly period (the KPI contract rejects all of them).
_ANOMALY_KINDS = (
    "blank_user_id",
    "blank_track_id",
    "whitespace_track_id",
    "non_integer_user_id",
    "invalid_month_day",
    "word_listen_time",
    "impossible_date",
    "future_listen_time",
    "missing_listen_time",
)

# listen_time text formats, each showing the same UTC instant:
# (name, upper bound of its permille range, strftime pattern, UTC offset in minutes, suffix).
_TIME_FORMATS = (
    ("plain", 970, "%Y-%m-%d %H:%M:%S", 0, ""),
    ("t_separator", 976, "%Y-%m-%dT%H:%M:%S", 0, ""),
    ("millis", 982, "%Y-%m-%d %H:%M:%S.%g", 0, ""),
    ("zulu", 987, "%Y-%m-%dT%H:%M:%S", 0, "Z"),
    ("plus_0200", 992, "%Y-%m-%dT%H:%M:%S", 120, "+02:00"),
    ("minus_0500", 996, "%Y-%m-%d %H:%M:%S", -300, "-05:00"),
    ("micros_plus_0530", 1000, "%Y-%m-%dT%H:%M:%S.%f", 330, "+05:30"),
)


@dataclass(frozen=True)
class GenerateSummary:
    """What :func:`generate` wrote.

    ``stream_rows`` counts every data row of every stream file, including the copy of a file
    under another name (``copied_rows``) and the malformed rows; ``songs`` counts distinct track
    ids and ``song_rows`` the rows of ``songs.csv`` (a few track ids appear twice).
    """

    out_dir: Path
    seed: int
    days: int
    users: int
    songs: int
    song_rows: int
    stream_rows: int
    copied_rows: int
    stream_files: int
    files: tuple[Path, ...]


@dataclass(frozen=True)
class _StreamFile:
    name: str
    day: int  # index of the day whose plays the file holds
    segments: tuple[tuple[int, int], ...]  # global row-index ranges [lo, hi), in order
    gzip: bool

    @property
    def rows(self) -> int:
        return sum(hi - lo for lo, hi in self.segments)


def generate(
    out_dir: Path,
    *,
    streams: int = 100_000,
    days: int = 7,
    seed: int = 42,
    users: int = 5_000,
    songs: int = 3_000,
    start_date: date = date(2026, 1, 5),
    progress: Callable[[str], None] | None = None,
) -> GenerateSummary:
    """Write ``users.csv``, ``songs.csv`` and ``streams/`` under ``out_dir``.

    ``streams`` plays are spread over ``days`` days from ``start_date`` (UTC); one whole file is
    then copied under another name (a new key: its plays are duplicates; not a re-delivery,
    which is the same key again), so the stream files hold a few more rows than that.
    Same arguments, same bytes. Raises ``ValueError`` for impossible arguments and
    ``FileExistsError`` when ``out_dir/streams`` already holds stream files.
    """
    _validate(streams=streams, days=days, users=users, songs=songs)
    say = progress or (lambda _message: None)
    out_dir = Path(out_dir)
    streams_dir = out_dir / "streams"
    if streams_dir.is_dir() and any(streams_dir.glob("*.csv*")):
        raise FileExistsError(
            f"{streams_dir} already holds stream files; generate into an empty directory"
        )
    streams_dir.mkdir(parents=True, exist_ok=True)

    users_path = out_dir / "users.csv"
    _write_users(users_path, users=users, seed=seed, start_date=start_date, days=days)

    songs_path = out_dir / "songs.csv"
    ranked_tracks, unknown_tracks, song_rows = _write_songs(songs_path, songs=songs, seed=seed)
    say(
        f"  users.csv: {users:,} users; songs.csv: {songs:,} tracks in {song_rows:,} rows, "
        f"{len(GENRES)} genres"
    )

    plan, bounds = _plan_stream_files(streams, days, start_date)
    files = len(plan) + (1 if len(plan) > 1 else 0)  # the copy under another name comes last
    written: list[Path] = [users_path, songs_path]
    stream_rows = 0
    with duckdb.connect() as con:
        con.execute("SET preserve_insertion_order = true")
        con.execute("SET memory_limit = '1GB'")
        con.execute("SET VARIABLE ranked_tracks = $1", [ranked_tracks])
        con.execute("SET VARIABLE unknown_tracks = $1", [unknown_tracks])
        period = _anomaly_period(streams)
        for number, spec in enumerate(plan, 1):
            path = streams_dir / spec.name
            query = _stream_query(
                spec,
                day_bounds=bounds[spec.day],
                day_start=start_date + timedelta(days=spec.day),
                seed=seed,
                users=users,
                songs=songs,
                anomaly_period=period,
            )
            compression = "gzip" if spec.gzip else "none"
            target = str(path).replace("'", "''")
            con.execute(
                f"COPY ({query}) TO '{target}' (FORMAT csv, HEADER true, COMPRESSION {compression})"
            )
            written.append(path)
            stream_rows += spec.rows
            say(f"  [{number}/{files}] streams/{spec.name}: {spec.rows:,} rows")

    copied_rows = 0
    if len(plan) > 1:
        source = plan[1]
        last_date = start_date + timedelta(days=days - 1)
        part = sum(1 for spec in plan if spec.name.startswith(f"listens_{last_date}_")) + 1
        suffix = ".csv.gz" if source.gzip else ".csv"
        copy = streams_dir / f"listens_{last_date}_part-{part:03d}{suffix}"
        shutil.copyfile(streams_dir / source.name, copy)
        written.append(copy)
        copied_rows = source.rows
        stream_rows += copied_rows
        say(f"  [{files}/{files}] streams/{copy.name}: a copy of {source.name} (duplicate plays)")

    return GenerateSummary(
        out_dir=out_dir,
        seed=seed,
        days=days,
        users=users,
        songs=songs,
        song_rows=song_rows,
        stream_rows=stream_rows,
        copied_rows=copied_rows,
        stream_files=len(written) - 2,
        files=tuple(written),
    )


def _validate(*, streams: int, days: int, users: int, songs: int) -> None:
    if not 1 <= days <= 3660:
        raise ValueError(f"days must be between 1 and 3660, got {days}")
    if not 1 <= streams < 2**31:
        raise ValueError(f"streams must be between 1 and 2**31 - 1, got {streams}")
    if users < 1:
        raise ValueError(f"users must be at least 1, got {users}")
    if songs < 20:
        raise ValueError(f"songs must be at least 20, got {songs}")


def _rng(seed: int, purpose: str) -> random.Random:
    # Synthetic data, not security: a seeded generator is the point.
    return random.Random(f"music-elt:{seed}:{purpose}")  # noqa: S311


def _salt(seed: int, lane: str) -> int:
    digest = hashlib.sha256(f"music-elt:{seed}:{lane}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


# --- users -----------------------------------------------------------------------------------


def _write_users(path: Path, *, users: int, seed: int, start_date: date, days: int) -> None:
    rng = _rng(seed, "users")
    codes = [code for code, _ in _COUNTRIES]
    weights = [weight for _, weight in _COUNTRIES]
    # created_at spans half a year before and after the plays: about half the plays come
    # from users whose account is "created" later (normal in the reference data: the KPI
    # contract says so).
    first_ts = datetime.combine(start_date, datetime.min.time()) - timedelta(days=180)
    span_seconds = (days + 360) * 86_400
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(USER_COLUMNS)
        for user_id in range(1, users + 1):
            name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
            roll = rng.random()
            if roll < 0.02:
                name += ", Jr."
            elif roll < 0.03:
                first, _, last = name.partition(" ")
                name = f'{first} "{rng.choice(_ADJ)}" {last}'
            age = min(90, max(13, int(rng.gauss(29, 10))))
            created = first_ts + timedelta(seconds=rng.randrange(span_seconds))
            writer.writerow(
                (
                    user_id,
                    name,
                    age,
                    rng.choices(codes, weights)[0],
                    created.strftime("%Y-%m-%d %H:%M:%S"),
                )
            )


# --- songs -----------------------------------------------------------------------------------


def _track_id(rng: random.Random) -> str:
    return "".join(rng.choices(_BASE62, k=22))


def _artist_pool(rng: random.Random, size: int) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < size:
        roll = rng.random()
        if roll < 0.45:
            name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        elif roll < 0.80:
            name = f"{rng.choice(('The ', ''))}{rng.choice(_ADJ)} {rng.choice(_NOUN)}"
        elif roll < 0.90:
            name = f"{rng.choice(_NOUN)}{rng.randrange(2, 99)}"
        elif roll < 0.95:
            name = f"{rng.choice(_ADJ)}, {rng.choice(_NOUN)} & {rng.choice(_NOUN)}"
        elif roll < 0.98:
            name = f'{rng.choice(_FIRST)} "{rng.choice(_ADJ)}" {rng.choice(_LAST)}'
        else:
            name = f"DJ {rng.choice(('🎧', '★', 'ß', '日本'))} {rng.choice(_FIRST)}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _credit(rng: random.Random, artists: Sequence[str]) -> str:
    def pick() -> str:
        # Skewed: a few artists have many tracks.
        return artists[int(len(artists) * rng.random() ** 1.7)]

    count = rng.choices((1, 2, 3), (80, 15, 5))[0]
    names: list[str] = []
    while len(names) < count:
        name = pick()
        if name not in names:
            names.append(name)
    if count == 1:
        return names[0]
    roll = rng.random()
    if roll < 0.06:
        return " ; ".join(names)
    if roll < 0.10:
        return "; ".join(names)
    if roll < 0.13:
        return f"{names[0]};;{';'.join(names[1:])}"
    return ";".join(names)


def _title(rng: random.Random, artists: Sequence[str]) -> str:
    words = f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}"
    roll = rng.random()
    if roll < 0.08:
        return f"{words} - Remastered {rng.randrange(1995, 2025)}"
    if roll < 0.14:
        return f"{words} (feat. {rng.choice(artists)})"
    if roll < 0.18:
        return f"{words}, Op. {rng.randrange(1, 80)}"
    if roll < 0.21:
        return f'"{words}"'
    if roll < 0.23:
        return f'{words} ("Live")'
    return words


def _album(rng: random.Random) -> str:
    roll = rng.random()
    words = f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}"
    if roll < 0.08:
        return f"{words} (Deluxe Edition)"
    if roll < 0.14:
        return f"{words}, Vol. {rng.randrange(1, 6)}"
    if roll < 0.17:
        return f'Live at "{rng.choice(_NOUN)}"'
    return words


def _features(rng: random.Random) -> dict[str, str]:
    def unit(mean: float, spread: float) -> float:
        return min(1.0, max(0.0, rng.gauss(mean, spread)))

    return {
        "explicit": "True" if rng.random() < 0.09 else "False",
        "danceability": f"{unit(0.57, 0.17):.3f}",
        "energy": f"{unit(0.64, 0.25):.3f}",
        "key": str(rng.randrange(12)),
        "loudness": f"{-abs(rng.gauss(8.3, 4.5)):.3f}",
        "mode": str(int(rng.random() < 0.64)),
        "speechiness": f"{unit(0.07, 0.09):.4f}",
        "acousticness": f"{unit(0.31, 0.33):.4g}",
        "instrumentalness": f"{rng.random() ** 6:.3g}",
        "liveness": f"{unit(0.21, 0.19):.4f}",
        "valence": f"{unit(0.47, 0.26):.4f}",
        "tempo": f"{min(220.0, max(40.0, rng.gauss(122, 30))):.3f}",
        "time_signature": str(rng.choices((4, 3, 5, 1), (89, 8, 2, 1))[0]),
    }


def _write_songs(path: Path, *, songs: int, seed: int) -> tuple[list[str], list[str], int]:
    """Write songs.csv; return track ids by play rank, unknown track ids, and the row count."""
    rng = _rng(seed, "songs")
    artists = _artist_pool(rng, max(10, songs // 3))
    ids: set[str] = set()
    while len(ids) < songs + _UNKNOWN_TRACK_POOL:
        ids.add(_track_id(rng))
    all_ids = sorted(ids)
    rng.shuffle(all_ids)
    ranked, unknown = all_ids[:songs], all_ids[songs:]

    rows: list[dict[str, str]] = []
    for rank, track_id in enumerate(ranked):
        popularity = round(82 - 8.5 * math.log1p(rank) + rng.gauss(0, 7))
        if rng.random() < 0.04:
            popularity = 0
        row = {
            "track_id": track_id,
            "artists": _credit(rng, artists),
            "album_name": _album(rng),
            "track_name": _title(rng, artists),
            "popularity": str(min(100, max(0, popularity))),
            "duration_ms": str(min(900_000, max(30_000, int(rng.lognormvariate(12.24, 0.3))))),
            **_features(rng),
            "track_genre": rng.choice(GENRES),
        }
        rows.append(row)
    # One track with missing text fields, as the public Spotify data set has.
    blank = rows[songs // 2]
    blank.update(artists="", album_name="", track_name="")

    # The same track listed under several genres: sometimes with the same popularity (the
    # genre decides), sometimes with another one; once as a fully repeated row.
    duplicates: list[dict[str, str]] = []
    for number, index in enumerate(rng.sample(range(songs), max(3, songs // 70))):
        if index == songs // 2:
            continue
        twin = dict(rows[index])
        if number > 0:
            twin["track_genre"] = rng.choice([g for g in GENRES if g != twin["track_genre"]])
        if number % 2 == 1:
            shift = rng.choice((-7, -3, -1, 1, 2, 5))
            twin["popularity"] = str(min(100, max(0, int(twin["popularity"]) + shift)))
        duplicates.append(twin)
    rows.extend(duplicates)
    rng.shuffle(rows)

    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(SONG_COLUMNS)
        for row_id, row in enumerate(rows):
            row["id"] = str(row_id)
            writer.writerow([row[column] for column in SONG_COLUMNS])
    return ranked, unknown, len(rows)


# --- streams ---------------------------------------------------------------------------------


def _plan_stream_files(
    streams: int, days: int, start_date: date
) -> tuple[list[_StreamFile], list[list[int]]]:
    """Split the global row index into (day, hour) cells and into producer files.

    Returns the files in delivery order and, per day, its 25 hour boundaries (global row
    indexes: hour ``h`` holds rows ``[b[h], b[h + 1])``).
    """
    weights = [
        _WEEKDAY_WEIGHTS[(start_date + timedelta(days=day)).weekday()] * hour_weight
        for day in range(days)
        for hour_weight in _HOUR_WEIGHTS
    ]
    total = sum(weights)
    cumulative = [0]
    for weight in weights:
        cumulative.append(cumulative[-1] + weight)
    edges = [streams * c // total for c in cumulative]
    bounds = [edges[24 * day : 24 * day + 25] for day in range(days)]

    deliveries: list[list[tuple[int, tuple[tuple[int, int], ...]]]] = [[] for _ in range(days)]
    late: list[tuple[int, tuple[tuple[int, int], ...]]] = []
    for day in range(days):
        lo, hi = bounds[day][0], bounds[day][24]
        size = hi - lo
        late_lo = lo + size * 2 // 5
        late_hi = late_lo + size // _LATE_SHARE
        on_time = size - (late_hi - late_lo)
        parts = max(_MIN_PARTS_PER_DAY, -(-on_time // _ROWS_PER_FILE))
        for part in range(parts):
            a, b = on_time * part // parts, on_time * (part + 1) // parts
            segments = _segments(lo + a, lo + b, late_lo, late_hi)
            if segments:
                deliveries[day].append((day, segments))
        if late_hi > late_lo:
            late.append((day, ((late_lo, late_hi),)))
    for day, segments in late:
        deliveries[min(day + 1, days - 1)].append((day, segments))

    plan: list[_StreamFile] = []
    for delivery_day, files in enumerate(deliveries):
        label = start_date + timedelta(days=delivery_day)
        for number, (day, segments) in enumerate(files, start=1):
            gz = number % 3 == 0
            name = f"listens_{label}_part-{number:03d}.csv" + (".gz" if gz else "")
            plan.append(_StreamFile(name=name, day=day, segments=segments, gzip=gz))
    return plan, bounds


def _segments(lo: int, hi: int, gap_lo: int, gap_hi: int) -> tuple[tuple[int, int], ...]:
    """Map ``[lo, hi)`` of the on-time index (which skips ``[gap_lo, gap_hi)``) to row ranges."""
    gap = gap_hi - gap_lo
    if hi <= gap_lo:
        pieces = [(lo, hi)]
    elif lo >= gap_lo:
        pieces = [(lo + gap, hi + gap)]
    else:
        pieces = [(lo, gap_lo), (gap_hi, hi + gap)]
    return tuple((a, b) for a, b in pieces if b > a)


def _anomaly_period(streams: int) -> int:
    """One malformed row of each kind per this many rows (denser in tiny data sets)."""
    return min(4_999, max(100, streams // 10))


def _hashed(inner: str, keep: Sequence[str], lanes: dict[str, tuple[str, int]]) -> str:
    """Add one 32-bit hash column per lane (Weyl step + murmur3 finaliser) to ``inner``."""
    carry = ", ".join(keep)
    first = ", ".join(
        f"((({expr})::UBIGINT * {_GOLDEN} + {salt}) & {_MASK32}) AS {name}"
        for name, (expr, salt) in lanes.items()
    )
    query = f"SELECT {carry}, {first} FROM ({inner})"
    for shift, factor in ((16, _MIX1), (13, _MIX2)):
        mixed = ", ".join(
            f"((xor({n}, {n} >> {shift})) * {factor}) & {_MASK32} AS {n}" for n in lanes
        )
        query = f"SELECT {carry}, {mixed} FROM ({query})"
    final = ", ".join(f"xor({n}, {n} >> 16)::BIGINT AS {n}" for n in lanes)
    return f"SELECT {carry}, {final} FROM ({query})"


def _format_sql(ts: str, pattern: str, offset_minutes: int, suffix: str) -> str:
    """SQL text of instant ``ts`` (microseconds, UTC) as local time at the offset, + suffix."""
    shifted = f"{ts} + {offset_minutes * 60_000_000}" if offset_minutes else ts
    text = f"strftime(make_timestamp({shifted}), '{pattern}')"
    return f"{text} || '{suffix}'" if suffix else text


def _stream_query(
    spec: _StreamFile,
    *,
    day_bounds: Sequence[int],
    day_start: date,
    seed: int,
    users: int,
    songs: int,
    anomaly_period: int,
) -> str:
    """SQL selecting ``user_id, track_id, listen_time`` for the rows of one stream file."""
    # Global row index i, in file order.
    if len(spec.segments) == 1:
        ((lo, hi),) = spec.segments
        index = f"SELECT {lo} + k AS i FROM range({hi - lo}) t(k)"
    else:
        (lo1, hi1), (lo2, hi2) = spec.segments
        first = hi1 - lo1
        index = (
            f"SELECT CASE WHEN k < {first} THEN {lo1} + k ELSE {lo2 - first} + k END AS i "
            f"FROM range({first + hi2 - lo2}) t(k)"
        )
    # A few rows repeat the previous row of the same day exactly (j = i - 1).
    dup = _hashed(index, ["i"], {"h_dup": ("i", _salt(seed, "duplicate"))})
    day_lo = day_bounds[0]
    rows = (
        f"SELECT CASE WHEN h_dup % 1000 < {_PERMILLE_DUPLICATE} AND i > {day_lo} "
        f"THEN i - 1 ELSE i END AS j FROM ({dup})"
    )
    lanes = {name: ("j", _salt(seed, name)) for name in ("h_user", "h_track", "h_time", "h_kind")}
    hashed = _hashed(rows, ["j"], lanes)

    hour = " ".join(f"WHEN j < {day_bounds[h + 1]} THEN {h}" for h in range(23))
    day_epoch = int(datetime.combine(day_start, datetime.min.time(), tzinfo=UTC).timestamp())
    positions = _rng(seed, "anomalies").sample(range(anomaly_period), len(_ANOMALY_KINDS))
    kind = " ".join(f"WHEN {p} THEN {k}" for k, p in enumerate(positions))
    unknown_users = max(10, users // 100)
    fmt = "(h_kind >> 20) % 1000"
    # Formats that show a fraction get an instant with one (ms or µs); the others whole seconds.
    fraction_cases, lower = [], 0
    for _, upper, pattern, _, _ in _TIME_FORMATS:
        if "%g" in pattern or "%f" in pattern:
            micros = (
                "((h_track >> 8) % 1000) * 1000" if "%g" in pattern else "(h_track >> 8) % 1000000"
            )
            fraction_cases.append(f"WHEN {fmt} >= {lower} AND {fmt} < {upper} THEN {micros}")
        lower = upper
    fraction = f"CASE {' '.join(fraction_cases)} ELSE 0 END" if fraction_cases else "0"
    derived = f"""
        SELECT
            j,
            CASE j % {anomaly_period} {kind} ELSE -1 END AS kind,
            CASE WHEN h_kind % 1000 < {_PERMILLE_UNKNOWN_USER}
                THEN {users + 1} + h_user % {unknown_users}
                ELSE 1 + floor({users} * pow(h_user / 4294967296.0, {_USER_SKEW}))::BIGINT
            END AS user_id,
            CASE WHEN (h_kind >> 10) % 1000 < {_PERMILLE_UNKNOWN_TRACK}
                THEN getvariable('unknown_tracks')[1 + h_track % {_UNKNOWN_TRACK_POOL}]
                ELSE getvariable('ranked_tracks')[
                    1 + floor({songs} * pow(h_track / 4294967296.0, {_TRACK_SKEW}))::BIGINT]
            END AS track_id,
            ({day_epoch} + 3600 * (CASE {hour} ELSE 23 END) + h_time % 3600)::BIGINT * 1000000
                + ({fraction}) AS ts,
            {fmt} AS fmt
        FROM ({hashed})
    """
    formats = " ".join(
        f"WHEN fmt < {upper} THEN {_format_sql('ts', pattern, offset, suffix)}"
        for _, upper, pattern, offset, suffix in _TIME_FORMATS
    )
    plain = _format_sql("ts", "%Y-%m-%d %H:%M:%S", 0, "")
    year = day_start.year
    k = {name: number for number, name in enumerate(_ANOMALY_KINDS)}
    return f"""
        SELECT
            CASE kind
                WHEN {k["blank_user_id"]} THEN NULL
                WHEN {k["non_integer_user_id"]} THEN user_id::VARCHAR || 'a'
                ELSE user_id::VARCHAR
            END AS user_id,
            CASE kind
                WHEN {k["blank_track_id"]} THEN NULL
                WHEN {k["whitespace_track_id"]} THEN '  '
                ELSE track_id
            END AS track_id,
            CASE kind
                WHEN {k["invalid_month_day"]} THEN '{year}-13-45 99:00:00'
                WHEN {k["word_listen_time"]} THEN 'yesterday'
                WHEN {k["impossible_date"]} THEN '{year}-02-30 10:00:00'
                WHEN {k["future_listen_time"]} THEN '2099-01-' || substr({plain}, 9)
                WHEN {k["missing_listen_time"]} THEN NULL
                ELSE CASE {formats} END
            END AS listen_time
        FROM ({derived})
    """
