"""Peak resident memory (RSS) of this process, step by step.

On Linux the kernel keeps the process's peak RSS (``VmHWM`` in ``/proc/self/status``) and starts
it again from the current RSS when ``5`` is written to ``/proc/self/clear_refs``: :func:`reset`
at a step's start and :func:`peak_bytes` at its end give that step's own peak. Elsewhere, or
where the peak cannot be reset, :func:`peak_bytes` is the peak since the process started
(``getrusage``), which a later step can only repeat or raise.

DuckDB and dbt run inside the process, so their memory is in the figure.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset() -> bool:
    """Start the peak again from the current RSS; False where the platform cannot."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_bytes() -> int:
    """The peak RSS since the last :func:`reset` (or since the process started), in bytes."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def format_bytes(size: int) -> str:
    """A size for a summary line: ``1.73 GB`` (decimal units, as DuckDB's ``3GB``)."""
    return f"{size / 1e9:.2f} GB"
