"""Whether the dbt docs site in a work directory describes the current project and last build.

``make docs`` serves ``<workdir>/dbt/target`` (which ``music-elt demo`` fills with
``dbt docs generate``) and regenerates it only when it is stale: artifacts missing, a dbt
project file changed since the catalog was generated, or a green build finished after it.

``python -m loaders.docs_site [--workdir W]`` prints why and exits 0 when the artifacts are
current, 1 when they need ``dbt docs generate``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from loaders.config import ConfigError, Settings
from loaders.serving import NoKpiData, open_reader
from loaders.warehouse import BUILDS_TABLE

ARTIFACTS = ("index.html", "manifest.json", "catalog.json")
# What dbt reads from the project; its own output folders are left out.
PROJECT_FILES = ("dbt_project.yml", "profiles.yml")
PROJECT_DIRS = ("models", "macros", "tests", "seeds", "snapshots", "analyses")


@dataclass(frozen=True)
class Freshness:
    current: bool
    reason: str


def docs_freshness(settings: Settings, last_build: datetime | None = None) -> Freshness:
    """Whether the docs artifacts under ``settings.dbt_target_path`` are current.

    ``last_build`` (naive UTC) is when the last green build finished; by default it is read
    from the build log (see :func:`last_build_finished`).
    """
    target = settings.dbt_target_path
    missing = [name for name in ARTIFACTS if not (target / name).is_file()]
    if missing:
        return Freshness(False, f"no docs artifacts yet in {target} ({', '.join(missing)})")
    generated = catalog_generated_at(target / "catalog.json")
    if generated is None:
        return Freshness(False, f"{target / 'catalog.json'} has no generated_at")
    changed = newest_project_file(settings.dbt_project_dir)
    if changed is not None and _mtime_utc(changed) > generated:
        return Freshness(False, f"{changed} changed after the docs were generated")
    if last_build is None:
        last_build = last_build_finished(settings)
    if last_build is not None and last_build > generated:
        return Freshness(False, "a dbt build finished after the docs were generated")
    return Freshness(True, f"docs generated {generated:%Y-%m-%d %H:%M:%S} UTC are current")


def catalog_generated_at(catalog: Path) -> datetime | None:
    """``metadata.generated_at`` of a catalog.json, as naive UTC."""
    try:
        stamp = json.loads(catalog.read_text())["metadata"]["generated_at"]
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def newest_project_file(project_dir: Path) -> Path | None:
    """The most recently modified file dbt reads from the project."""
    files = [project_dir / name for name in PROJECT_FILES if (project_dir / name).is_file()]
    for folder in PROJECT_DIRS:
        if (project_dir / folder).is_dir():
            files += [p for p in (project_dir / folder).rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_mtime, default=None)


def last_build_finished(settings: Settings) -> datetime | None:
    """When the last green build finished (naive UTC), from what readers are served (the dbt
    view ``pipeline_freshness`` in the DuckDB serving copy, or in the warehouse); None when
    unknown or never."""
    reader = open_reader(settings)
    try:
        rows = reader.query(
            f"select last_green_build_at from {reader.relation('marts.pipeline_freshness')}"
        )
    except (NoKpiData, ConnectionError):
        return _duckdb_last_build(settings)
    return rows[0][0] if rows else None


def _duckdb_last_build(settings: Settings) -> datetime | None:
    """The warehouse's build log read directly (DuckDB, nothing published yet); None when it
    cannot be read, e.g. while a run writes it (then regenerating would fail as well)."""
    if settings.warehouse.kind != "duckdb" or not settings.warehouse.duckdb_path.is_file():
        return None
    import duckdb

    try:
        conn = duckdb.connect(str(settings.warehouse.duckdb_path), read_only=True)
    except duckdb.Error:
        return None
    try:
        row = conn.execute(f"select max(finished_at) from {BUILDS_TABLE}").fetchone()
    except duckdb.Error:
        return None
    finally:
        conn.close()
    return row[0] if row else None


def _mtime_utc(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(tzinfo=None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loaders.docs_site",
        description="Exit 0 when the dbt docs artifacts of a work directory are current.",
    )
    parser.add_argument("--workdir", help="work directory (default: $MUSIC_ELT_WORKDIR)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(workdir=Path(args.workdir) if args.workdir else None)
    except ConfigError as exc:
        print(f"docs: error: {exc}", file=sys.stderr)
        return 2
    freshness = docs_freshness(settings)
    print(f"docs: {freshness.reason}" + ("" if freshness.current else "; regenerating"))
    return 0 if freshness.current else 1


if __name__ == "__main__":
    sys.exit(main())
