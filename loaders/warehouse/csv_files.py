"""What a file must be before any warehouse reads it: a CSV header with the required columns
(:func:`read_header`, :func:`column_positions`), lines no longer than the contract's limit
(:class:`LineLimit`), and one line saying why a file was refused (:func:`rejection_reason`)."""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Sequence
from typing import Any

from loaders.errors import FileRejected, one_line
from loaders.landing import LandingStore, is_gzip

_HEADER_BYTES = 64 * 1024
MAX_LINE_BYTES = 64 << 20  # the contract: a line up to 64 MiB loads like any other


def read_header(landing: LandingStore, key: str) -> list[str]:
    """The normalised header of a CSV object (gzip or plain); FileRejected if it has none."""
    with landing.open(key) as raw:
        head = raw.read(_HEADER_BYTES)
    if not head:
        raise FileRejected("empty file: no header line")
    if is_gzip(key):
        try:
            head = gzip.GzipFile(fileobj=io.BytesIO(head)).read1(_HEADER_BYTES)
        except (OSError, EOFError) as exc:
            raise FileRejected(f"not a readable gzip file: {exc}") from None
        if not head:
            raise FileRejected("empty file: no header line")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # A multi-byte character may be cut at the end of the sample: decode the first line only.
        first, newline, _rest = head.partition(b"\n")
        try:
            text = first.decode("utf-8-sig") + newline.decode()
        except UnicodeDecodeError:
            raise FileRejected(f"header is not UTF-8 text: {exc}") from None
    first_line = text.splitlines()[0] if text else ""
    if "\x00" in first_line:
        raise FileRejected("not a CSV file: binary content in the header")
    header = next(csv.reader([first_line]), [])
    return [name.strip().lower() for name in header]


def column_positions(header: Sequence[str], required: Sequence[str]) -> dict[str, int]:
    """1-based position of each required column in ``header``; FileRejected if any is missing
    or named twice (which of the two holds the values is anybody's guess)."""
    found = ",".join(header)[:200]
    missing = [name for name in required if name not in header]
    if missing:
        raise FileRejected(f"header lacks required column(s) {', '.join(missing)} (found: {found})")
    twice = [name for name in required if header.count(name) > 1]
    if twice:
        raise FileRejected(f"header names column(s) {', '.join(twice)} twice (found: {found})")
    return {name: header.index(name) + 1 for name in required}


class LineLimit:
    """A binary stream passing ``stream`` through that raises :class:`FileRejected` when a
    line is longer than ``limit`` bytes, the limit DuckDB applies with ``max_line_size`` (so
    that PostgreSQL, whose COPY would take up to 1 GB, refuses the same files). Reads are at
    most 1 MiB, far below the limit, so only the line across reads needs counting. What a read
    raised is kept in ``error`` (psycopg2 reports it as a cancelled COPY)."""

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream, self._limit, self._line = stream, limit, 0
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            chunk: bytes = self._stream.read(size)
            first = chunk.find(b"\n")
            if first >= 0 and self._line + first > self._limit:
                raise FileRejected(long_line_reason())
            self._line = (
                self._line + len(chunk) if first < 0 else len(chunk) - chunk.rfind(b"\n") - 1
            )
            if self._line > self._limit:
                raise FileRejected(long_line_reason())
        except BaseException as exc:
            self.error = exc
            raise
        return chunk


def long_line_reason() -> str:
    """Why a file with a line longer than the limit is refused."""
    return (
        f"a line is longer than {MAX_LINE_BYTES >> 20} MiB, the longest a stream file may "
        "hold: split the file's long values or lines"
    )


# The name DuckDB read a file under (a folder music-elt-*/, digits) means nothing to a reader.
_TEMPORARY_COPY = re.compile(r":? ?\S*music-elt-[^/\s]+/\d{5}\.csv")


def rejection_reason(exc: BaseException) -> str:
    """One line saying why a warehouse could not load a file's bytes."""
    text = _TEMPORARY_COPY.sub("", str(exc))
    if re.search(r"(?i)maximum line size", text):
        return long_line_reason()
    if re.search(r"(?i)unicode|not utf-?8|invalid byte sequence|encoding", text):
        return f"not UTF-8 text: {one_line(text, 500)}"
    return f"not loadable as CSV: {one_line(text, 500)}"
