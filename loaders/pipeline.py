"""One pipeline run, step by step: extract RDS, find new stream files, load, dbt build, archive.

The CLI runs the steps in sequence (:func:`run`); the Airflow DAG calls the same functions as
separate tasks. Every step is safe to repeat: extraction writes a new snapshot folder, loading
skips what the ledger holds, dbt recomputes only what changed, archiving finishes half-done moves.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath

from loaders import rds
from loaders.config import ConfigError, Settings
from loaders.dbt import DbtReport, run_dbt
from loaders.landing import (
    ARCHIVE_PREFIX,
    QUARANTINE_PREFIX,
    STREAMS_PREFIX,
    LandedObject,
    LandingStore,
    open_landing,
)
from loaders.rds import TableExtract
from loaders.warehouse import (
    BUILDS_TABLE,
    LEDGER_TABLE,
    STREAMS_TABLE,
    FileRejected,
    Warehouse,
    open_warehouse,
)

Progress = Callable[[str], None]
STREAM_SUFFIXES = (".csv", ".csv.gz")
MARTS = ("fct_genre_kpis_daily", "fct_listening_kpis_hourly", "fct_top_artists_hourly")


def new_run_id() -> str:
    """A sortable, unique id for one run: UTC time plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def utcnow() -> datetime:
    """Naive UTC now, the type of the raw tables' ``_loaded_at``."""
    return datetime.now(UTC).replace(tzinfo=None)


def landing_store(settings: Settings) -> LandingStore:
    """The landing zone these settings name."""
    return open_landing(
        settings.landing_url or str(settings.local_landing), endpoint_url=settings.s3_endpoint_url
    )


@contextmanager
def warehouse(settings: Settings) -> Iterator[Warehouse]:
    """A connected warehouse with its raw schemas, ledger and build log in place."""
    with open_warehouse(settings) as wh:
        wh.setup()
        yield wh


# -- step 1: extract -----------------------------------------------------------------------------
def extract_rds(
    settings: Settings, landing: LandingStore, run_id: str, progress: Progress = print
) -> list[TableExtract]:
    """Extract every configured RDS table in batches into landing."""
    extracts = []
    with rds.connect(settings, wait_seconds=30) as conn:
        for table in settings.rds_tables:
            if settings.embedded_rds and not rds.table_exists(conn, table):
                raise ConfigError(
                    f"the embedded RDS in {settings.workdir} has no table {table!r}: "
                    f"seed it first (music-elt seed --from-dir DIR --workdir {settings.workdir})"
                )
            extracts.append(
                rds.extract_table(
                    conn,
                    table,
                    landing,
                    run_id=run_id,
                    batch_size=settings.batch_size,
                    progress=progress,
                )
            )
    return extracts


# -- step 2: find the work -----------------------------------------------------------------------
@dataclass(frozen=True)
class Work:
    """What a run has to do, found by comparing landing with the ledger."""

    snapshots: tuple[TableExtract, ...] = ()  # RDS tables whose content changed
    stream_files: tuple[LandedObject, ...] = ()  # stream files not in the ledger
    archive_ready: tuple[LandedObject, ...] = ()  # loaded earlier, still in the input prefix
    unbuilt_loads: bool = False  # loads since the last successful dbt build
    # songs changed after marts were built from an earlier snapshot: the incremental marts
    # only recompute periods with new plays, so the build must be a full refresh
    tracks_changed: bool = False

    @property
    def needs_build(self) -> bool:
        return bool(self.snapshots or self.stream_files or self.unbuilt_loads)

    def describe(self) -> str:
        if not self.needs_build and not self.archive_ready:
            return "nothing new: no new stream file, RDS tables unchanged, marts up to date"
        return (
            f"{len(self.stream_files)} new stream file(s), "
            f"{len(self.snapshots)} changed RDS table(s)"
            + (
                f", {len(self.archive_ready)} file(s) loaded earlier await archiving"
                if self.archive_ready
                else ""
            )
            + (", loads since the last dbt build" if self.unbuilt_loads else "")
        )


def find_work(settings: Settings, landing: LandingStore, extracts: list[TableExtract]) -> Work:
    """Compare the landing zone and the fresh extracts with the warehouse's ledger."""
    with warehouse(settings) as wh:
        ledger = wh.ledger()
        last_snapshot = dict(
            wh.query(
                f"select target_table, etag from {LEDGER_TABLE} l where status = 'loaded' "
                "and target_table like %s and loaded_at = (select max(loaded_at) from "
                f"{LEDGER_TABLE} l2 where l2.target_table = l.target_table "
                "and l2.status = 'loaded')",
                ("raw_rds.%",),
            )
        )
        (unbuilt,) = wh.query(
            f"select count(*) from {LEDGER_TABLE} where status = 'loaded' and loaded_at > "
            f"coalesce((select max(started_at) from {BUILDS_TABLE}), cast('1900-01-01' as "
            "timestamp))"
        )[0]
    changed = tuple(e for e in extracts if last_snapshot.get(f"raw_rds.{e.table}") != e.sha256)
    new: list[LandedObject] = []
    ready: list[LandedObject] = []
    for obj in landing.list(STREAMS_PREFIX):
        if PurePosixPath(obj.key).name.startswith((".", "_")):
            continue  # producer markers and temporary files
        (ready if obj.etag in ledger.get(obj.key, ()) else new).append(obj)
    return Work(
        tracks_changed=any(
            e.table == "songs" and "raw_rds.songs" in last_snapshot for e in changed
        ),
        snapshots=changed,
        stream_files=tuple(new),
        archive_ready=tuple(ready),
        unbuilt_loads=int(unbuilt) > 0,
    )


# -- step 3: load --------------------------------------------------------------------------------
@dataclass
class LoadReport:
    """Counts of one load step."""

    files_loaded: list[LandedObject] = field(default_factory=list)
    files_skipped: list[LandedObject] = field(default_factory=list)
    files_rejected: list[tuple[LandedObject, str]] = field(default_factory=list)
    stream_rows: int = 0
    snapshot_rows: dict[str, int] = field(default_factory=dict)


def load(
    settings: Settings,
    landing: LandingStore,
    work: Work,
    *,
    load_id: str,
    progress: Progress = print,
) -> LoadReport:
    """Load changed snapshots and new stream files exactly once; quarantine refused files."""
    report = LoadReport()
    with warehouse(settings) as wh:
        for extract in work.snapshots:
            outcome = wh.load_snapshot(landing, extract, load_id=load_id, loaded_at=utcnow())
            if outcome.status == "loaded":
                report.snapshot_rows[extract.table] = outcome.rows
            progress(f"  raw_rds.{extract.table}: {outcome.status} ({outcome.rows:,} rows)")
        total = len(work.stream_files)
        for i, obj in enumerate(work.stream_files, 1):
            loaded_at = utcnow()
            try:
                outcome = wh.load_stream_file(landing, obj, load_id=load_id, loaded_at=loaded_at)
            except FileRejected as exc:
                quarantine(landing, obj, exc.reason)
                wh.record_rejected(obj, STREAMS_TABLE, exc.reason, load_id, loaded_at)
                report.files_rejected.append((obj, exc.reason))
                progress(f"  [{i}/{total}] {obj.key}: REJECTED, {exc.reason}")
                continue
            if outcome.status == "loaded":
                report.files_loaded.append(obj)
                report.stream_rows += outcome.rows
            else:
                report.files_skipped.append(obj)
            progress(f"  [{i}/{total}] {obj.key}: {outcome.status} ({outcome.rows:,} rows)")
    return report


def quarantine(landing: LandingStore, obj: LandedObject, reason: str) -> str:
    """Move a refused file to quarantine/ with a ``.reason.txt`` beside it."""
    dst = QUARANTINE_PREFIX + obj.key
    landing.write_text(dst + ".reason.txt", reason + "\n")
    landing.move(obj.key, dst)
    return dst


# -- step 4: dbt ---------------------------------------------------------------------------------
def build(settings: Settings, *, load_id: str, full_refresh: bool = False) -> DbtReport:
    """``dbt build`` the project; on success, record it in the build log."""
    started = utcnow()
    command = ["build", "--full-refresh"] if full_refresh else ["build"]
    report = run_dbt(settings, command)
    record_build(settings, load_id=load_id, started=started)
    return report


def record_build(settings: Settings, *, load_id: str, started: datetime) -> None:
    """Record a successful dbt build that started at ``started`` (naive UTC) in the build log:
    loads before that time are built. The DAG calls this after its dbt tasks all succeeded."""
    with warehouse(settings) as wh:
        wh.record_build(load_id, started, utcnow())


# -- step 5: archive -----------------------------------------------------------------------------
def archive(
    settings: Settings,
    landing: LandingStore,
    objects: list[LandedObject],
    *,
    progress: Progress = print,
) -> list[str]:
    """Move loaded stream files to archive/streams/<date>/..., <date> being the UTC day the
    ledger first recorded the object as loaded, so that a rerun (even days later) finishes an
    interrupted move at the same destination."""
    with warehouse(settings) as wh:
        first_loaded = {
            (key, etag): loaded_at
            for key, etag, loaded_at in wh.query(
                f"select object_key, etag, min(loaded_at) from {LEDGER_TABLE} "
                "where status = 'loaded' group by object_key, etag"
            )
        }
    moved = []
    for obj in objects:
        loaded_at = first_loaded.get((obj.key, obj.etag)) or utcnow()
        day = loaded_at.date().isoformat()
        dst = f"{ARCHIVE_PREFIX}{STREAMS_PREFIX}{day}/{obj.key[len(STREAMS_PREFIX) :]}"
        landing.move(obj.key, dst)
        moved.append(dst)
    if moved:
        progress(f"  archived {len(moved)} file(s) under {ARCHIVE_PREFIX}{STREAMS_PREFIX}")
    return moved


# -- the whole run -------------------------------------------------------------------------------
@dataclass
class RunSummary:
    """What one run did, for the closing summary."""

    run_id: str
    work: Work | None = None
    load: LoadReport | None = None
    dbt: DbtReport | None = None
    archived: list[str] = field(default_factory=list)
    mart_rows: dict[str, int] = field(default_factory=dict)
    rejected_rows: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"run {self.run_id}"]
        if self.load:
            out.append(
                f"  files: {len(self.load.files_loaded)} loaded, "
                f"{len(self.load.files_skipped)} already loaded, "
                f"{len(self.load.files_rejected)} rejected"
            )
            out.append(f"  stream rows loaded: {self.load.stream_rows:,}")
            for table, rows in self.load.snapshot_rows.items():
                out.append(f"  raw_rds.{table}: new snapshot, {rows:,} rows")
            for obj, reason in self.load.files_rejected:
                out.append(f"  rejected {obj.key}: {reason}")
        if self.dbt:
            out.append(f"  dbt: {self.dbt.line()}")
            rejected = sum(self.rejected_rows.values())
            reasons = ", ".join(f"{n:,} {reason}" for reason, n in self.rejected_rows.items())
            out.append(f"  stream rows rejected by the cleaning rules: {rejected:,}")
            if reasons:
                out.append(f"    ({reasons}; see marts.fct_rejected_listens)")
        for name, rows in self.mart_rows.items():
            out.append(f"  marts.{name}: {rows:,} rows")
        out.append(f"  archived: {len(self.archived)} file(s)")
        out.append(
            "  time: " + ", ".join(f"{step} {sec:.1f}s" for step, sec in self.timings.items())
        )
        return out


def run(settings: Settings, *, progress: Progress = print, force_build: bool = False) -> RunSummary:
    """One pipeline run exactly as production does it. Raises on failure; archives nothing
    unless dbt build succeeded."""
    run_id = new_run_id()
    summary = RunSummary(run_id=run_id)
    landing = landing_store(settings)

    def step(name: str) -> _Timer:
        progress(f"==> {name}")
        return _Timer(summary.timings, name)

    with step("extract"):
        extracts = extract_rds(settings, landing, run_id, progress)
    with step("detect"):
        work = summary.work = find_work(settings, landing, extracts)
        progress(f"  {work.describe()}")
    if not (work.needs_build or work.archive_ready or force_build):
        progress("nothing to do: skipping load, dbt build and archive")
        return summary
    with step("load"):
        summary.load = load(settings, landing, work, load_id=run_id, progress=progress)
    if work.needs_build or force_build:
        with step("dbt build"):
            if work.tracks_changed:
                progress("  songs changed since the last build: full refresh of the models")
            summary.dbt = build(settings, load_id=run_id, full_refresh=work.tracks_changed)
    with step("archive"):
        loaded = [*work.archive_ready, *summary.load.files_loaded, *summary.load.files_skipped]
        summary.archived = archive(settings, landing, loaded, progress=progress)
    summary.mart_rows = mart_row_counts(settings)
    summary.rejected_rows = rejected_row_counts(settings, load_id=run_id)
    return summary


def mart_row_counts(settings: Settings) -> dict[str, int]:
    """Rows in each KPI mart (0 for a mart not built yet)."""
    counts = {}
    with open_warehouse(settings) as wh:
        for mart in MARTS:
            try:
                counts[mart] = int(wh.query(f"select count(*) from marts.{mart}")[0][0])
            except Exception:  # not built yet
                counts[mart] = 0
    return counts


def rejected_row_counts(settings: Settings, *, load_id: str) -> dict[str, int]:
    """Rows of one load that dbt rejected, by reason."""
    with open_warehouse(settings) as wh:
        rows = wh.query(
            "select reject_reason, count(*) from marts.fct_rejected_listens "
            "where load_id = %s group by reject_reason order by reject_reason",
            (load_id,),
        )
    return {reason: int(n) for reason, n in rows}


class _Timer:
    def __init__(self, timings: dict[str, float], name: str) -> None:
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.name] = time.perf_counter() - self.start
