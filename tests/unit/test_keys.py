"""Keys and files without I/O: escaped names, which keys are stream files, the plan's skipped
entries through XCom, the 64 MiB line limit of the PostgreSQL stream, and the one-line
classification of driver errors."""

from __future__ import annotations

import io

import psycopg2
import pytest

from loaders.errors import ServiceOutage, step_outage
from loaders.landing import LandedObject, is_gzip, is_stream_file_name, shown
from loaders.pipeline import LoadReport, Plan, stream_file_problem
from loaders.warehouse import FileRejected, LineLimit


def test_printed_names_cannot_forge_a_line() -> None:
    assert shown("streams/ünï [ab]*?.csv") == "streams/ünï [ab]*?.csv"
    forged = shown("streams/x\nfiles: 99 loaded\r\x1b[2K.csv")
    assert "\n" not in forged and "\r" not in forged and "\x1b" not in forged
    assert forged.startswith("'streams/x\\nfiles")
    assert shown("a\\nb.csv") != "a\\nb.csv"  # a literal backslash-n is told apart


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("streams/a.csv", None),
        ("streams/A.CSV", None),
        ("streams/x.csv.GZ", None),
        ("streams/sub/Title.Csv.Gz", None),
        ("streams/[ab]*.csv", None),
        ("streams/notes.txt", "not a stream file"),
        ("streams/x.csv.bak", "not a stream file"),
        ("streams/.x.csv", "hidden"),
        ("streams/_SUCCESS", "marker"),
        ("streams/folder/", "folder marker"),
    ],
)
def test_stream_files_are_csv_or_csv_gz_in_any_case(key: str, problem: str | None) -> None:
    found = stream_file_problem(key)
    assert (found is None) if problem is None else (found is not None and problem in found)
    assert is_stream_file_name(key) == key.lower().endswith((".csv", ".csv.gz"))


def test_gzip_is_told_by_the_suffix_in_any_case() -> None:
    assert is_gzip("a.csv.gz") and is_gzip("a.CSV.GZ") and not is_gzip("a.csv")


def test_the_plan_keeps_its_skipped_entries_through_xcom() -> None:
    plan = Plan(
        run_id="r1",
        stream_files=(LandedObject("streams/A.CSV", 3, "e"),),
        skipped=(("streams/link.csv", "a symbolic link to /x"), ("streams/n.txt", "not a stream")),
    )
    again = Plan.model_validate(plan.model_dump(mode="json"))
    assert again == plan
    assert again.skipped_lines() == [
        "skipped streams/link.csv: a symbolic link to /x",
        "skipped streams/n.txt: not a stream",
    ]
    assert Plan.model_validate({**plan.model_dump(mode="json"), "skipped": []}).skipped == ()


def test_the_load_report_keeps_unloadable_versions_and_warns_by_name() -> None:
    report = LoadReport(unloadable_versions=(("streams/k.csv.gz", "not a readable gzip file"),))
    again = LoadReport.model_validate(report.model_dump(mode="json"))
    assert again.unloadable_versions == report.unloadable_versions
    (warning,) = LoadReport.merge([again, LoadReport()]).warnings()
    assert "streams/k.csv.gz" in warning and "still counts" in warning
    assert not any("correction" in line and "k.csv.gz" in line for line in again.lines())


def _read_all(stream: LineLimit, size: int = 1 << 20) -> int:
    total = 0
    while chunk := stream.read(size):
        total += len(chunk)
    return total


def test_lines_up_to_the_limit_pass_a_longer_one_is_refused() -> None:
    limit = 1000
    fits = b"h\n" + b"x" * limit + b"\n" + b"y" * limit
    assert _read_all(LineLimit(io.BytesIO(fits), limit), size=64) == len(fits)
    for data in (b"h\n" + b"x" * (limit + 1) + b"\nz\n", b"x" * (limit + 1)):
        stream = LineLimit(io.BytesIO(data), limit)
        with pytest.raises(FileRejected, match="longer than 64 MiB"):
            _read_all(stream, size=64)
        assert isinstance(stream.error, FileRejected)


def test_driver_errors_in_a_step_are_one_line_outages() -> None:
    state = "nothing was loaded; the next run extracts again"
    error = psycopg2.OperationalError(
        "server closed the connection unexpectedly\n\tThis probably means the server terminated"
    )
    failure = step_outage(error, "extract", state)
    assert isinstance(failure, ServiceOutage)
    assert "\n" not in str(failure) and "\t" not in str(failure)
    assert str(failure).startswith("network during extract: OperationalError: server closed")
    assert str(failure).endswith(f"({state})")
    assert isinstance(
        step_outage(PermissionError(13, "Permission denied"), "plan", state), ServiceOutage
    )
    own = ConnectionError("cannot reach the RDS database at host=x: refused")
    assert step_outage(own, "extract", state) is own  # already one line naming the service
    assert step_outage(ValueError("a bug"), "load", state) is None  # a bug keeps its traceback
