"""What the CLI prints: plain lines, and counters that keep to one line.

A counter is a progress message starting with ``[i/n]`` (a file of a load, a generated file) or
dbt's node count (:mod:`loaders.dbt`). On a terminal it is rewritten in place (``\\r``) until
the next plain line. When the output is not a terminal (a file, a CI log) a counter is printed
when it completes, and before that at most every ``interval`` seconds, so a log shows a long
step advancing without a line per item; nothing printed here carries colour codes.
"""

from __future__ import annotations

import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

_COUNTER = re.compile(r"^\s*\[(\d+)/(\d+)\]")


class Console:
    """Writes to ``stream`` (default: ``sys.stdout`` at the time of writing). Thread-safe: dbt
    reports nodes from its worker threads."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._tty = tty
        self.interval = interval
        self._clock = clock
        self._open = 0  # width of a counter line on screen that no newline has ended yet
        self._shown = clock()  # when the last line was printed (not a terminal)
        self._lock = threading.Lock()

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    @property
    def tty(self) -> bool:
        """Whether the output is a terminal (counters in place) or not (counter lines)."""
        if self._tty is not None:
            return self._tty
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def say(self, message: str) -> None:
        """Print a progress message: ``[i/n] ...`` as a counter, anything else as a line."""
        match = _COUNTER.match(message)
        if match:
            self.counter(message, int(match[1]), int(match[2]))
        else:
            self.line(message)

    def line(self, message: str) -> None:
        """Print ``message`` on a line of its own (ending a counter line on screen)."""
        with self._lock:
            self._end_counter()
            self.stream.write(message + "\n")
            self.stream.flush()
            self._shown = self._clock()

    def counter(self, message: str, done: int, total: int) -> None:
        """Show ``message`` as the state of a counter at ``done`` of ``total``."""
        with self._lock:
            if self.tty:
                width = max(20, shutil.get_terminal_size().columns - 1)
                text = message.rstrip()[:width]
                self.stream.write("\r" + text.ljust(self._open))
                self._open = len(text)
                if done >= total:
                    self._end_counter()
            elif done >= total or self._clock() - self._shown >= self.interval:
                self.stream.write(message + "\n")
                self._shown = self._clock()
            self.stream.flush()

    def _end_counter(self) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = 0


console = Console()
"""The process's console on standard output: the CLI's messages and dbt's progress."""
