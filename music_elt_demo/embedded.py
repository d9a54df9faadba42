"""The RDS stand-in of the embedded stack: PostgreSQL 16 from the ``pgserver`` wheel.

The server's data lives in the work directory (``Settings.pgdata``); it starts in about a second
with no install and stops when the process that started it exits.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from loaders.config import ConfigError

MISSING_EXTRA = (
    "the embedded PostgreSQL (no MUSIC_ELT_RDS_DSN) needs the 'embedded' extra: "
    "pip install 'music-elt[embedded]', or set MUSIC_ELT_RDS_DSN to a real database"
)


def embedded_server(pgdata: Path) -> Any:
    """Start (or attach to) the pgserver PostgreSQL in ``pgdata``; it stops with the process.

    Raises ConfigError with what to install when ``pgserver`` is missing.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
        try:
            import pgserver
        except ImportError:
            raise ConfigError(MISSING_EXTRA) from None

        pgdata.mkdir(parents=True, exist_ok=True)
        return pgserver.get_server(pgdata, cleanup_mode="stop")
