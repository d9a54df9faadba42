"""Bad input loses nothing: every reject rule of the KPI contract, files refused whole, an empty
file, a gzip file and a re-delivered file, through `seed` + `run`, with rows in = kept + rejected +
duplicates and every rejected row kept with its file, line and reason."""

from __future__ import annotations

import gzip
from datetime import datetime
from pathlib import Path

import pytest

from loaders import pipeline
from loaders.cli import main as cli
from loaders.config import Settings
from loaders.warehouse import open_warehouse
from tests.checks import published
from tests.kpi_reference import MARTS, assert_rows_match, compute_kpis

pytestmark = pytest.mark.slow

USERS = (
    "user_id,user_name,user_age,user_country,created_at\n"
    "1,Ann,30,DE,2026-01-01\n2,Bo,41,SE,2026-01-01\n"
)
SONGS = (
    "track_id,artists,album_name,track_name,popularity,duration_ms,track_genre\n"
    "t1,Zed;alpha,A,One,50,200000,pop\n"
    "t2, Zed ;;Beta ,B,Two,70,100000,rock\n"
    "t2,Other,B,Two (dup),10,100000,jazz\n"
)
GOOD = (
    "user_id,track_id,listen_time\n"
    "1,t1,2026-01-05 10:00:00\n"
    "2,t2,2026-01-05T10:15:00Z\n"
    "1,t2,2026-01-05 12:20:00+02:00\n"  # 10:20 UTC
    "3,t9,2026-01-05 10:59:59.5\n"  # unknown user and unknown track: kept
    "1,t1,2026-01-05 10:00:00\n"  # exact duplicate
)
BAD_ROWS = (
    "user_id,track_id,listen_time\n"
    ",t1,2026-01-05 10:00:00\n"  # missing user_id
    "1,  ,2026-01-05 10:00:00\n"  # blank track_id
    "12a,t1,2026-01-05 10:00:00\n"  # user_id not an integer
    "1,t1,2026-02-30 10:00:00\n"  # no such day
    "1,t1,yesterday\n"  # unparseable
    "1,t1,2099-01-01 00:00:00\n"  # later than load time + 1 day
    "2,t1,2026-01-05 11:00:00\n"  # fine
)


def write(path: Path, text: str, *, compress: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())


def test_bad_input_is_kept_with_reasons_and_counts_add_up(tmp_path: Path) -> None:
    src, work = tmp_path / "src", tmp_path / "work"
    write(src / "users.csv", USERS)
    write(src / "songs.csv", SONGS)
    write(src / "streams/a_good.csv", GOOD)
    write(src / "streams/b_bad_rows.csv.gz", BAD_ROWS, compress=True)
    write(src / "streams/c_no_time.csv", "user_id,track_id\n1,t1\n")
    write(src / "streams/d_empty.csv", "")
    write(src / "streams/e_redelivered.csv", GOOD)
    assert cli(["seed", "--from-dir", str(src), "--workdir", str(work)]) == 0
    assert cli(["run", "--workdir", str(work)]) == 0
    settings = Settings.from_env({}, workdir=work)

    files = sorted((src / "streams").iterdir())
    expected = compute_kpis(src / "users.csv", src / "songs.csv", files, datetime.now())
    for mart, spec in MARTS.items():
        rows = published(settings, f"select {', '.join(spec.columns)} from marts.{mart}")
        assert_rows_match(expected.rows(mart), rows, key=spec.key, columns=spec.columns, label=mart)

    with open_warehouse(settings) as wh:
        rejects = wh.query(
            "select source_file, line_number, reject_reason from marts.fct_rejected_listens "
            "order by source_file, line_number"
        )
        (raw,) = wh.query("select count(*) from raw_streams.streams")[0]
        (kept,) = wh.query("select count(*) from marts.fct_listens")[0]
        refused = wh.query(
            "select object_key, reason from raw_meta.load_ledger where status = 'rejected' "
            "order by object_key"
        )
    assert rejects == [
        ("streams/b_bad_rows.csv.gz", 2, "missing_user_id"),
        ("streams/b_bad_rows.csv.gz", 3, "missing_track_id"),
        ("streams/b_bad_rows.csv.gz", 4, "invalid_user_id"),
        ("streams/b_bad_rows.csv.gz", 5, "invalid_listen_time"),
        ("streams/b_bad_rows.csv.gz", 6, "invalid_listen_time"),
        ("streams/b_bad_rows.csv.gz", 7, "future_listen_time"),
    ]
    assert [(Path(r.file).name, r.line, r.reason) for r in expected.rejects] == [
        (Path(f).name, line, reason) for f, line, reason in rejects
    ]
    # 5 + 7 + 5 rows landed; 6 rejected; the duplicate row and the re-delivered file count once
    assert raw == 17
    assert kept == 5 == expected.kept
    assert raw == kept + len(rejects) + expected.duplicates
    assert [key for key, _ in refused] == ["streams/c_no_time.csv", "streams/d_empty.csv"]
    assert "listen_time" in refused[0][1] and "empty" in refused[1][1]

    landing = pipeline.landing_store(settings)
    assert {o.key for o in landing.list("quarantine/")} == {
        "quarantine/streams/c_no_time.csv",
        "quarantine/streams/c_no_time.csv.reason.txt",
        "quarantine/streams/d_empty.csv",
        "quarantine/streams/d_empty.csv.reason.txt",
    }
    assert landing.list("streams/") == []
    assert len(landing.list("archive/streams/")) == 3


def test_changed_songs_rebuild_the_marts(tmp_path: Path) -> None:
    """A new songs snapshot (a genre corrected at the source) reaches marts already built."""
    src, work = tmp_path / "src", tmp_path / "work"
    write(src / "users.csv", USERS)
    write(src / "songs.csv", SONGS)
    write(src / "streams/a_good.csv", GOOD)
    assert cli(["seed", "--from-dir", str(src), "--workdir", str(work)]) == 0
    assert cli(["run", "--workdir", str(work)]) == 0
    write(src / "songs.csv", SONGS.replace("One,50,200000,pop", "One,50,200000,dance"))
    assert cli(["seed", "--from-dir", str(src), "--workdir", str(work)]) == 0
    assert cli(["run", "--workdir", str(work)]) == 0

    settings = Settings.from_env({}, workdir=work)
    files = sorted((src / "streams").iterdir())
    expected = compute_kpis(src / "users.csv", src / "songs.csv", files, datetime.now())
    spec = MARTS["fct_genre_kpis_daily"]
    rows = published(settings, f"select {', '.join(spec.columns)} from marts.fct_genre_kpis_daily")
    assert "dance" in {row[1] for row in rows}
    assert_rows_match(expected.genre_daily, rows, key=spec.key, columns=spec.columns)
