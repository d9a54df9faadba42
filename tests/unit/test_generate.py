"""The generated data set: deterministic, complete, realistic, and carrying every anomaly."""

from __future__ import annotations

import cProfile
import csv
import gzip
import hashlib
import itertools
import pstats
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from loaders.demo.generate import (
    GENRES,
    SONG_COLUMNS,
    GenerateSummary,
    _plan_stream_files,
    generate,
)
from tests import kpi_reference as ref

STREAMS = 5_000
DAYS = 3
START = date(2026, 1, 5)
FILE_NAME = re.compile(r"listens_(\d{4}-\d{2}-\d{2})_part-(\d{3})\.csv(\.gz)?")


def _read(path: Path) -> list[list[str]]:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
            return list(csv.reader(handle))
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def _digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerateSummary, int]:
    """The generated data set and the function calls generating it took (cProfile's count:
    the same on every machine, unlike a duration)."""
    out = tmp_path_factory.mktemp("generated")
    profile = cProfile.Profile()
    summary = profile.runcall(
        generate, out, streams=STREAMS, days=DAYS, seed=7, users=400, songs=600
    )
    return summary, pstats.Stats(profile).total_calls  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def summary(generated: tuple[GenerateSummary, int]) -> GenerateSummary:
    return generated[0]


@pytest.fixture(scope="module")
def streams(summary: GenerateSummary) -> dict[str, list[list[str]]]:
    return {path.name: _read(path) for path in sorted((summary.out_dir / "streams").iterdir())}


@pytest.fixture(scope="module")
def rows(streams: dict[str, list[list[str]]]) -> list[list[str]]:
    return [row for content in streams.values() for row in content[1:]]


@pytest.fixture(scope="module")
def songs(summary: GenerateSummary) -> list[dict[str, str]]:
    with (summary.out_dir / "songs.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_small_run_is_cheap(generated: tuple[GenerateSummary, int]) -> None:
    """A small data set stays within a work budget counted in function calls, not seconds
    (about 144,000 today): per-play work stays in bulk operations."""
    assert generated[1] < 1_000_000


def test_same_arguments_give_the_same_bytes(summary: GenerateSummary, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", streams=STREAMS, days=DAYS, seed=7, users=400, songs=600)
    assert _digests(again.out_dir) == _digests(summary.out_dir)
    other = generate(tmp_path / "other", streams=STREAMS, days=DAYS, seed=8, users=400, songs=600)
    assert _digests(other.out_dir) != _digests(summary.out_dir)


def test_summary_counts_match_the_files(
    summary: GenerateSummary, streams: dict[str, list[list[str]]], songs: list[dict[str, str]]
) -> None:
    assert summary.stream_rows == sum(len(content) - 1 for content in streams.values())
    assert summary.stream_rows == STREAMS + summary.copied_rows
    assert summary.stream_files == len(streams)
    assert summary.song_rows == len(songs)
    assert summary.songs == len({song["track_id"] for song in songs}) == 600
    assert set(summary.files) >= {summary.out_dir / "users.csv", summary.out_dir / "songs.csv"}
    assert all(path.is_file() for path in summary.files)


def test_users_file(summary: GenerateSummary) -> None:
    content = _read(summary.out_dir / "users.csv")
    assert content[0] == ["user_id", "user_name", "user_age", "user_country", "created_at"]
    users = content[1:]
    assert [int(row[0]) for row in users] == list(range(1, 401))
    assert any(not row[1].isascii() for row in users)
    created = [datetime.strptime(row[4], "%Y-%m-%d %H:%M:%S") for row in users]
    first_play = datetime.combine(START, datetime.min.time())
    later = sum(moment > first_play for moment in created)
    assert 0.3 < later / len(created) < 0.7  # about half the accounts "created" after plays
    assert all(13 <= int(row[2]) <= 90 and len(row[3]) == 2 for row in users)


def test_songs_file_columns_and_values(
    summary: GenerateSummary, songs: list[dict[str, str]]
) -> None:
    content = _read(summary.out_dir / "songs.csv")
    assert tuple(content[0]) == SONG_COLUMNS
    assert len(SONG_COLUMNS) == 21
    assert all(len(row) == 21 for row in content)
    assert all(re.fullmatch(r"[0-9A-Za-z]{22}", song["track_id"]) for song in songs)
    assert all(0 <= int(song["popularity"]) <= 100 for song in songs)
    assert [int(song["id"]) for song in songs] == list(range(len(songs)))
    assert len({song["track_genre"] for song in songs}) >= 100
    assert len(GENRES) >= 100


def test_songs_carry_real_world_mess(summary: GenerateSummary, songs: list[dict[str, str]]) -> None:
    credits = [song["artists"] for song in songs]
    assert any(";" in c and ";;" not in c and " ; " not in c for c in credits)
    assert any(" ; " in c for c in credits)
    assert any(";;" in c for c in credits)
    text = "\n".join(song["artists"] + song["album_name"] + song["track_name"] for song in songs)
    for needle in ("é", "ß", "日本", "🔥", ",", '"'):
        assert needle in text, needle
    raw = (summary.out_dir / "songs.csv").read_text(encoding="utf-8")
    assert '""' in raw  # a double quote inside a quoted field
    by_track = Counter(song["track_id"] for song in songs)
    duplicated = {track for track, count in by_track.items() if count > 1}
    assert len(duplicated) >= 3
    twins = [[s for s in songs if s["track_id"] == track] for track in duplicated]
    assert any(len({s["track_genre"] for s in group}) > 1 for group in twins)
    assert any(len({s["popularity"] for s in group}) > 1 for group in twins)
    assert any(len({s["popularity"] for s in group}) == 1 for group in twins)
    assert any(song["artists"] == "" and song["track_name"] == "" for song in songs)


def test_stream_files_are_named_for_a_producer(streams: dict[str, list[list[str]]]) -> None:
    assert all(FILE_NAME.fullmatch(name) for name in streams), list(streams)
    assert all(content[0] == ["user_id", "track_id", "listen_time"] for content in streams.values())
    assert all(len(row) == 3 for content in streams.values() for row in content)
    per_day = Counter(FILE_NAME.fullmatch(name).group(1) for name in streams)  # type: ignore[union-attr]
    assert len(per_day) == DAYS
    assert min(per_day.values()) >= 4
    gz = [name for name in streams if name.endswith(".gz")]
    assert len(gz) >= DAYS
    assert all(len(streams[name]) > 1 for name in gz)


def test_a_file_is_redelivered_under_another_name(
    summary: GenerateSummary, streams: dict[str, list[list[str]]]
) -> None:
    by_content = Counter(tuple(map(tuple, content)) for content in streams.values())
    assert max(by_content.values()) == 2
    assert summary.copied_rows > 0


def test_late_files_hold_plays_of_earlier_hours(streams: dict[str, list[list[str]]]) -> None:
    latest_hour_so_far: datetime | None = None
    late_files = []
    for name in sorted(streams):
        hours = _hours(streams[name])
        name_date = date.fromisoformat(FILE_NAME.fullmatch(name).group(1))  # type: ignore[union-attr]
        if latest_hour_so_far and hours and min(hours) < latest_hour_so_far:
            late_files.append(name)
            assert min(hours).date() <= name_date
        if hours:
            latest_hour_so_far = max([*hours, latest_hour_so_far or hours[0]])
    assert len(late_files) >= DAYS - 1
    assert any(
        date.fromisoformat(FILE_NAME.fullmatch(name).group(1))  # type: ignore[union-attr]
        > min(_hours(streams[name])).date()
        for name in late_files
    )


def _hour(text: str) -> datetime | None:
    instant = ref.parse_listen_time(text)
    return instant.replace(minute=0, second=0, microsecond=0, tzinfo=None) if instant else None


def _hours(content: list[list[str]]) -> list[datetime]:
    """UTC hours of a file's parseable, not-future plays, in file order."""
    hours = (_hour(row[2]) for row in content[1:])
    return [hour for hour in hours if hour is not None and hour.year < 2099]


def test_every_anomaly_is_present(rows: list[list[str]], summary: GenerateSummary) -> None:
    """Every kind of row the staging layer must handle appears, and the mess stays small."""
    known_tracks = {song[1] for song in _read(summary.out_dir / "songs.csv")[1:]}
    kinds: Counter[str] = Counter()
    for user_id, track_id, listen_time in rows:
        kinds["blank_user_id"] += user_id.strip() == ""
        kinds["blank_track_id"] += track_id == ""
        kinds["whitespace_track_id"] += track_id != "" and track_id.strip() == ""
        kinds["non_integer_user_id"] += bool(re.fullmatch(r"\d+[a-z]", user_id))
        kinds["unknown_user"] += user_id.isdigit() and int(user_id) > 400
        kinds["unknown_track"] += bool(track_id.strip()) and track_id not in known_tracks
        kinds["bad_month_day"] += listen_time.endswith("-13-45 99:00:00")
        kinds["word_time"] += listen_time == "yesterday"
        kinds["feb_30"] += listen_time.endswith("-02-30 10:00:00")
        kinds["missing_time"] += listen_time == ""
        kinds["year_2099"] += listen_time.startswith("2099-")
        kinds["t_separator"] += "T" in listen_time
        kinds["fraction"] += "." in listen_time
        kinds["zulu"] += listen_time.endswith("Z")
        kinds["offset"] += bool(re.search(r"[+-]\d{2}:\d{2}$", listen_time))
        kinds["plain"] += bool(re.fullmatch(r"2026-\d\d-\d\d \d\d:\d\d:\d\d", listen_time))
    missing = [kind for kind, count in kinds.items() if count == 0]
    assert not missing, kinds
    assert kinds["plain"] > 0.9 * len(rows)
    malformed = sum(kinds[k] for k in ("blank_user_id", "non_integer_user_id", "word_time"))
    assert malformed < 0.05 * len(rows)


def test_some_rows_repeat_inside_a_file(streams: dict[str, list[list[str]]]) -> None:
    repeats = sum(
        content[i] == content[i - 1] for content in streams.values() for i in range(2, len(content))
    )
    assert 0 < repeats < 0.01 * sum(len(content) for content in streams.values())


def test_timestamps_mean_instants_inside_the_period(rows: list[list[str]]) -> None:
    start = datetime.combine(START, datetime.min.time(), tzinfo=UTC)
    end = start + timedelta(days=DAYS)
    instants = [ref.parse_listen_time(row[2]) for row in rows]
    valid = [moment for moment in instants if moment is not None and moment.year < 2099]
    assert len(valid) > 0.97 * len(rows)
    assert all(start <= moment < end for moment in valid)
    offsets = [
        ref.parse_listen_time(row[2])
        for row in rows
        if re.search(r"[+-]\d{2}:\d{2}$", row[2]) and not row[2].startswith("2099")
    ]
    assert offsets and all(moment is not None and start <= moment < end for moment in offsets)


def test_rows_within_a_file_follow_the_clock(streams: dict[str, list[list[str]]]) -> None:
    # Rows are produced hour by hour; an offset converted the wrong way would jump back.
    for name, content in streams.items():
        hours = _hours(content)
        assert hours == sorted(hours), name


def test_plays_are_skewed_and_follow_a_daily_cycle(rows: list[list[str]]) -> None:
    tracks = Counter(row[1] for row in rows if row[1].strip())
    top_share = tracks.most_common(1)[0][1] / sum(tracks.values())
    assert top_share > 20 / 600  # far above a uniform 1/600
    top_tenth = sum(count for _, count in tracks.most_common(60)) / sum(tracks.values())
    assert top_tenth > 0.4
    by_hour: Counter[int] = Counter()
    for row in rows:
        hour = _hour(row[2])
        if hour is not None and hour.year < 2099:
            by_hour[hour.hour] += 1
    assert by_hour[20] > 4 * by_hour[4]


def test_plan_scales_to_1e8_rows_in_bounded_files() -> None:
    plan, bounds = _plan_stream_files(100_000_000, 7, START)
    assert max(spec.rows for spec in plan) <= 1_000_000
    ranges = sorted(segment for spec in plan for segment in spec.segments)
    assert ranges[0][0] == 0 and ranges[-1][1] == 100_000_000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert all(bounds[day][0] <= lo < hi <= bounds[day][24] for spec in plan
               for day in [spec.day] for lo, hi in spec.segments)  # fmt: skip
    assert len({spec.name for spec in plan}) == len(plan)


def test_refuses_a_directory_with_stream_files(summary: GenerateSummary) -> None:
    with pytest.raises(FileExistsError, match="empty directory"):
        generate(summary.out_dir, streams=10)


@pytest.mark.parametrize("arguments", [{"streams": 0}, {"days": 0}, {"users": 0}, {"songs": 5}])
def test_rejects_impossible_arguments(tmp_path: Path, arguments: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        generate(tmp_path, **arguments)  # type: ignore[arg-type]
