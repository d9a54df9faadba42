"""One pipeline run as a plan and its steps: extract, plan, load, build, archive, publish.

Every decision of a run is taken once, here: :func:`plan_run` compares the landing zone and the
fresh RDS extracts with the warehouse's ledger and returns a :class:`Plan` (what is new, whether
to run at all, how loads are grouped). The steps execute it:
:func:`load` (one :class:`LoadGroup`), :func:`build` (``dbt build`` here or through Cosmos under
Airflow, then the green build recorded), :func:`archive` and :func:`publish`. The CLI
(:func:`run`) and the Airflow DAG call the same functions and decide nothing themselves. Every
step is safe to repeat: extraction writes a new snapshot folder, loading skips what the ledger
holds, dbt recomputes only what changed, archiving finishes half-done moves, a publish writes
what differs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from loaders import manifest, peak_memory, rds
from loaders.config import ConfigError, Settings
from loaders.dbt import DbtReport, build_flags, run_dbt
from loaders.errors import (
    BuildNotGreen,
    Interrupted,
    Terminated,
    interrupt_signal,
    is_interrupt,
    step_outage,
)
from loaders.landing import (
    ARCHIVE_PREFIX,
    QUARANTINE_PREFIX,
    RDS_PREFIX,
    STREAMS_PREFIX,
    LandedObject,
    LandingStore,
    VersionChanged,
    is_stream_file_name,
    open_landing,
    shown,
)
from loaders.rds import TableExtract
from loaders.serving import publish, publish_pending
from loaders.warehouse import STREAMS_TABLE, Warehouse, open_warehouse, snapshot_table

Progress = Callable[[str], None]
FILES_PER_LOAD_GROUP = 25
STAGED_MODEL = "stg_streams__listens"  # one typed row per raw stream row, with its reject reason


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
def extract(
    settings: Settings,
    landing: LandingStore,
    run_id: str,
    *,
    tables: Sequence[str] | None = None,
    progress: Progress = print,
) -> list[TableExtract]:
    """Extract the configured RDS tables (or ``tables``) in batches into landing."""
    extracts = []
    rds.require_source(settings)
    with rds.connect(settings, progress=progress) as conn:
        for table in tables or settings.rds_tables:
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


# -- step 2: plan --------------------------------------------------------------------------------
class LoadGroup(BaseModel):
    """One unit of loading: changed RDS tables or a group of new stream files."""

    model_config = ConfigDict(frozen=True)

    label: str
    snapshots: tuple[TableExtract, ...] = ()
    stream_files: tuple[LandedObject, ...] = ()


class Plan(BaseModel):
    """What one run does, decided once from landing, the fresh extracts and the ledger. Its
    JSON form (Airflow XCom) includes :attr:`should_run` and :attr:`description`, derived, for
    the DAG's templates and logs; they are recomputed, not read back."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    snapshots: tuple[TableExtract, ...] = ()  # RDS tables whose content changed
    stream_files: tuple[LandedObject, ...] = ()  # stream file versions not in the ledger
    archive_ready: tuple[LandedObject, ...] = ()  # loaded earlier, still in the input prefix
    unbuilt_loads: bool = False  # loads since the last green dbt build
    songs_changed: bool = False  # a new songs snapshot: dbt recomputes every KPI period
    forced: bool = False  # the user asked for a build
    publish_pending: bool = False  # a green build readers do not see yet (a publish died)
    skipped: tuple[tuple[str, str], ...] = ()  # (key, reason): under streams/, not stream files

    @property
    def needs_build(self) -> bool:
        """Whether to load, build and archive. Files loaded by an earlier run that did not
        finish are rebuilt and archived too, so a run either does everything or nothing."""
        return bool(
            self.snapshots
            or self.stream_files
            or self.archive_ready
            or self.unbuilt_loads
            or self.forced
        )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def should_run(self) -> bool:
        """Whether the run does anything at all: build, or at least publish."""
        return self.needs_build or self.publish_pending

    def load_groups(self, files_per_group: int = FILES_PER_LOAD_GROUP) -> list[LoadGroup]:
        """One group per changed RDS table, then the new stream files ``files_per_group`` at
        a time (the DAG maps a task over them; the CLI loads them in order)."""
        groups = [LoadGroup(label=snapshot_table(e.table), snapshots=(e,)) for e in self.snapshots]
        size = max(1, files_per_group)
        files = self.stream_files
        for start in range(0, len(files), size):
            chunk = files[start : start + size]
            label = f"streams {start + 1}-{start + len(chunk)} of {len(files)}"
            groups.append(LoadGroup(label=label, stream_files=chunk))
        return groups

    @computed_field  # type: ignore[prop-decorator]
    @property
    def description(self) -> str:
        """What the run does, in one line (printed by the CLI's plan step and the DAG)."""
        if not self.should_run:
            return "nothing new: no new stream file, RDS tables unchanged, marts up to date"
        parts = [
            f"{len(self.stream_files)} new stream file(s)",
            f"{len(self.snapshots)} changed RDS table(s)",
        ]
        if self.archive_ready:
            parts.append(f"{len(self.archive_ready)} file(s) loaded earlier await archiving")
        if self.unbuilt_loads:
            parts.append("loads since the last dbt build")
        if self.songs_changed:
            parts.append("songs changed: every KPI period is recomputed")
        if self.publish_pending:
            parts.append("a green build is not published yet")
        return ", ".join(parts)

    def skipped_lines(self) -> list[str]:
        """One line per entry under the streams prefix that is not loaded, with the reason
        (printed by every run that sees it: the CLI's plan step, the DAG's plan task)."""
        return [f"skipped {shown(key)}: {reason}" for key, reason in self.skipped]


def stream_file_problem(key: str) -> str | None:
    """Why the entry at ``key`` under the streams prefix is not a stream file to load, or None
    when it is one (the contract's "Keys and files"). The one place that decides it."""
    name = PurePosixPath(key).name
    if not name or key.endswith("/"):
        return "a folder marker, not a file"
    if name.startswith((".", "_")):
        return "a hidden, temporary or marker name (starts with '.' or '_')"
    if not is_stream_file_name(name):
        return "not a stream file (the name does not end in .csv or .csv.gz, in any case)"
    return None


def plan_run(
    settings: Settings,
    landing: LandingStore,
    extracts: Sequence[TableExtract],
    *,
    run_id: str,
    force_build: bool = False,
    progress: Progress = print,
) -> Plan:
    """Compare the landing zone and the fresh extracts with the warehouse's ledger. An extract
    equal to the snapshot already loaded is deleted at once: a run with nothing new leaves
    nothing behind. Entries under the streams prefix that are not stream files are skipped,
    each with its reason (printed through ``progress`` and kept in :attr:`Plan.skipped`)."""
    with warehouse(settings) as wh:
        ledger = wh.ledger()
        last_snapshot = wh.latest_snapshots()
        unbuilt = wh.has_unbuilt_loads()
        pending = publish_pending(settings, wh)
    changed = tuple(
        e for e in extracts if last_snapshot.get(snapshot_table(e.table), ("", ""))[1] != e.sha256
    )
    for unchanged in (e for e in extracts if e not in changed and e.prefix not in ledger):
        landing.delete_prefix(unchanged.prefix)
    new: list[LandedObject] = []
    ready: list[LandedObject] = []
    skipped = list(landing.unlisted(STREAMS_PREFIX))
    for obj in landing.list(STREAMS_PREFIX):
        if (problem := stream_file_problem(obj.key)) is not None:
            skipped.append((obj.key, problem))
            continue
        (ready if ledger.get(obj.key) == obj.etag else new).append(obj)
    plan = Plan(
        run_id=run_id,
        snapshots=changed,
        stream_files=tuple(new),
        archive_ready=tuple(ready),
        unbuilt_loads=unbuilt,
        songs_changed=any(
            e.table == "songs" and snapshot_table("songs") in last_snapshot for e in changed
        ),
        forced=force_build,
        publish_pending=pending,
        skipped=tuple(sorted(skipped)),
    )
    for line in plan.skipped_lines():
        progress(f"  {line}")
    return plan


# -- step 3: load --------------------------------------------------------------------------------
class LoadReport(BaseModel):
    """What loading did; reports of several groups add up with :meth:`merge`."""

    model_config = ConfigDict(frozen=True)

    files_loaded: tuple[LandedObject, ...] = ()
    files_skipped: tuple[LandedObject, ...] = ()
    files_rejected: tuple[tuple[LandedObject, str], ...] = ()
    files_superseded: tuple[str, ...] = ()  # keys re-delivered: corrections
    # (key, reason): a later version refused whole; the version loaded before it stays current
    unloadable_versions: tuple[tuple[str, str], ...] = ()
    stream_rows: int = 0
    snapshot_rows: dict[str, int] = Field(default_factory=dict)

    @classmethod
    def merge(cls, reports: Sequence[LoadReport]) -> LoadReport:
        return cls(
            files_loaded=tuple(obj for r in reports for obj in r.files_loaded),
            files_skipped=tuple(obj for r in reports for obj in r.files_skipped),
            files_rejected=tuple(entry for r in reports for entry in r.files_rejected),
            files_superseded=tuple(key for r in reports for key in r.files_superseded),
            unloadable_versions=tuple(e for r in reports for e in r.unloadable_versions),
            stream_rows=sum(r.stream_rows for r in reports),
            snapshot_rows={t: n for r in reports for t, n in r.snapshot_rows.items()},
        )

    def lines(self) -> list[str]:
        out = [
            f"files: {len(self.files_loaded)} loaded, {len(self.files_skipped)} already "
            f"loaded, {len(self.files_rejected)} rejected",
            f"stream rows loaded: {self.stream_rows:,}",
        ]
        out += [
            f"{snapshot_table(t)}: new snapshot, {n:,} rows" for t, n in self.snapshot_rows.items()
        ]
        out += [
            f"rejected {shown(obj.key)}: {shown(reason)}" for obj, reason in self.files_rejected
        ]
        out += [
            f"re-delivered {shown(key)}: a correction, its earlier version is superseded "
            "(kept in raw)"
            for key in self.files_superseded
        ]
        return out

    def warnings(self) -> list[str]:
        """What a person must look at although the run succeeded: a new version of a loaded
        file that could not be loaded at all (quarantined; the earlier version still counts)."""
        return [
            f"a new version of {shown(key)} could not be loaded and was quarantined "
            f"({shown(reason)}); "
            "it is not a correction: the version loaded before it still counts. "
            "Deliver a loadable version to correct the file."
            for key, reason in self.unloadable_versions
        ]


def load(
    settings: Settings,
    landing: LandingStore,
    group: LoadGroup,
    *,
    load_id: str,
    progress: Progress = print,
    numbered: tuple[int, int] | None = None,
) -> LoadReport:
    """Load changed snapshots and new stream files exactly once; quarantine refused files.
    A service failure raises :class:`loaders.errors.ServiceOutage` and quarantines nothing.
    Files are numbered ``[i/n]`` within the group, or from ``numbered`` = (files before this
    group, files in the run) when the group is one of a run's."""
    snapshot_rows: dict[str, int] = {}
    loaded: list[LandedObject] = []
    skipped: list[LandedObject] = []
    rejected: list[tuple[LandedObject, str]] = []
    superseded: list[str] = []
    unloadable: list[tuple[str, str]] = []
    stream_rows = 0
    with warehouse(settings) as wh:
        for extract_ in group.snapshots:
            outcome = wh.load_snapshot(landing, extract_, load_id=load_id, loaded_at=utcnow())
            if outcome.status == "loaded":
                snapshot_rows[extract_.table] = outcome.rows
            progress(
                f"  {snapshot_table(extract_.table)}: {outcome.status} ({outcome.rows:,} rows)"
            )
        before, total = numbered or (0, len(group.stream_files))
        loaded_at = utcnow()
        outcomes = wh.load_stream_files(  # one transaction for the group's files
            landing, group.stream_files, load_id=load_id, loaded_at=loaded_at
        )
        for i, (obj, outcome) in enumerate(
            zip(group.stream_files, outcomes, strict=True), before + 1
        ):
            if outcome.status == "rejected":
                quarantine(landing, obj, outcome.reason)
                if wh.record_rejected(obj, STREAMS_TABLE, outcome.reason, load_id, loaded_at):
                    unloadable.append((obj.key, outcome.reason))
                rejected.append((obj, outcome.reason))
                progress(f"  [{i}/{total}] {shown(obj.key)}: REJECTED, {shown(outcome.reason)}")
                continue
            if outcome.status == "loaded":
                loaded.append(obj)
                stream_rows += outcome.rows
                if outcome.superseded:
                    superseded.append(obj.key)
            else:
                skipped.append(obj)
            progress(f"  [{i}/{total}] {shown(obj.key)}: {outcome.status} ({outcome.rows:,} rows)")
    return LoadReport(
        files_loaded=tuple(loaded),
        files_skipped=tuple(skipped),
        files_rejected=tuple(rejected),
        files_superseded=tuple(superseded),
        unloadable_versions=tuple(unloadable),
        stream_rows=stream_rows,
        snapshot_rows=snapshot_rows,
    )


def load_all(
    settings: Settings,
    landing: LandingStore,
    plan: Plan,
    *,
    progress: Progress = print,
) -> LoadReport:
    """Every load group of the plan in order (the DAG maps one task per group instead)."""
    reports, before = [], 0
    for group in plan.load_groups(settings.files_per_load_group):
        numbered = (before, len(plan.stream_files))
        reports.append(
            load(
                settings, landing, group, load_id=plan.run_id, progress=progress, numbered=numbered
            )
        )
        before += len(group.stream_files)
    return LoadReport.merge(reports)


def quarantine(landing: LandingStore, obj: LandedObject, reason: str) -> str:
    """Move a refused file to quarantine/ with a ``.reason.txt`` beside it (another version
    already quarantined under that name keeps its place: this one gets its own name)."""
    dst = version_key(landing, obj, QUARANTINE_PREFIX + obj.key)
    landing.write_text(dst + ".reason.txt", reason + "\n")
    landing.move(obj.key, dst, etag=obj.etag)
    return dst


def version_key(landing: LandingStore, obj: LandedObject, dst: str) -> str:
    """Where to move ``obj`` so that nothing is overwritten: ``dst``, unless ``dst`` holds
    another version of the file, then ``dst`` with the version's etag before its extension
    (``x.csv.gz`` -> ``x~<etag>.csv.gz``). The same version always gets the same name, so a
    rerun finishes an interrupted move."""
    folder, _, name = dst.rpartition("/")
    stem, dot, extension = name.partition(".")
    versioned = f"{folder}/{stem}~{obj.etag.strip(chr(34))[:12]}{dot}{extension}".lstrip("/")
    if not landing.exists(obj.key):  # moved by an earlier attempt: to one of the two
        return versioned if landing.exists(versioned) else dst
    if not landing.exists(dst) or landing.same_content(obj.key, dst):
        return dst
    return versioned


# -- step 4: dbt ---------------------------------------------------------------------------------
def build(settings: Settings, run_id: str, runner: Callable[[], Any] | None = None) -> Any:
    """``dbt build`` the project (in this process, or through ``runner``: the DAG's Cosmos
    producer runs the same command), then record the green build under ``run_id`` with the
    ledger's load sequence it started from: every load up to it is in the marts. Raises
    DbtFailed (or the runner's error) when a node fails, and then records nothing."""
    with warehouse(settings) as wh:
        watermark = wh.ledger_watermark()
    started = utcnow()
    command = ["build", *build_flags(settings)]
    result = runner() if runner is not None else run_dbt(settings, command)
    with warehouse(settings) as wh:
        wh.record_build(run_id, watermark, started, utcnow())
    return result


def require_green_build(settings: Settings, run_id: str) -> None:
    """Raise BuildNotGreen unless the warehouse recorded a green build of run ``run_id``: the
    steps after dbt (archive, publish) check it instead of assuming it."""
    with warehouse(settings) as wh:
        if wh.green_build(run_id):
            return
    raise BuildNotGreen(
        f"no green dbt build of run {run_id} is recorded, so nothing is archived or published: "
        "clear the dbt task group (its producer) with its downstream tasks, or trigger a new run"
    )


# -- step 5: finish ------------------------------------------------------------------------------
def archive(
    settings: Settings,
    landing: LandingStore,
    plan: Plan,
    loads: LoadReport,
    *,
    progress: Progress = print,
) -> list[str]:
    """Move the stream file versions this and earlier runs loaded to
    archive/streams/<date>/..., <date> being the UTC day the ledger first recorded the version,
    so that a rerun (even days later) finishes an interrupted move at the same destination.
    Only the version the ledger holds moves: one delivered meanwhile stays for the next run.
    Then prune old RDS extracts. Call it only after a green dbt build."""
    done = {obj.key: obj for obj in (*plan.archive_ready, *loads.files_loaded)}
    done.update({obj.key: obj for obj in loads.files_skipped})
    with warehouse(settings) as wh:
        first_loaded = wh.first_loaded_at()
        snapshots = wh.latest_snapshots()
    moved = []
    for obj in done.values():
        loaded_at = first_loaded.get((obj.key, obj.etag)) or utcnow()
        day = loaded_at.date().isoformat()
        dst = f"{ARCHIVE_PREFIX}{STREAMS_PREFIX}{day}/{obj.key[len(STREAMS_PREFIX) :]}"
        dst = version_key(landing, obj, dst)  # every version kept under its own name
        try:
            landing.move(obj.key, dst, etag=obj.etag)
        except VersionChanged:
            progress(
                f"  {shown(obj.key)}: a new version arrived during the run; left for the next run"
            )
            continue
        moved.append(dst)
    if moved:
        progress(f"  archived {len(moved)} file(s) under {ARCHIVE_PREFIX}{STREAMS_PREFIX}")
    prune_extracts(settings, landing, keep_loaded={key for key, _ in snapshots.values()})
    return moved


def prune_extracts(settings: Settings, landing: LandingStore, *, keep_loaded: set[str]) -> None:
    """Delete RDS extract folders ``rds/<table>/<run>/`` but the newest
    ``MUSIC_ELT_KEEP_RDS_EXTRACTS`` of each table and the snapshot each raw table holds."""
    folders: dict[str, set[str]] = {}
    for obj in landing.list(RDS_PREFIX):
        parts = obj.key.split("/")
        if len(parts) >= 4:  # rds/<table>/<run>/<file>
            folders.setdefault(parts[1], set()).add("/".join(parts[:3]) + "/")
    for names in folders.values():
        for prefix in sorted(names)[: -settings.keep_rds_extracts]:
            if prefix not in keep_loaded:
                landing.delete_prefix(prefix)


def correction_effects(
    settings: Settings, keys: Sequence[str], *, load_id: str
) -> dict[str, tuple[int, int]]:
    """For each corrected key of a load (after a green build): the kept plays its new version
    adds and removes against the version it superseded, by key (the plays of that file; a play
    another file also holds stays in the marts)."""
    staged = manifest.model(manifest.load_manifest(settings.dbt_manifest_path), STAGED_MODEL)
    if staged is None or not keys:
        return {}
    effects = {}
    with open_warehouse(settings) as wh:
        for key in dict.fromkeys(keys):
            if (effect := wh.correction_effect(staged.relation, key, load_id)) is not None:
                effects[key] = effect
    return effects


def rejected_rows(settings: Settings, *, load_id: str) -> dict[str, int]:
    """Rows of one load that the cleaning rules rejected, by reason."""
    rejects = manifest.model(
        manifest.load_manifest(settings.dbt_manifest_path), manifest.REJECTS_MODEL
    )
    if rejects is None:
        return {}
    with open_warehouse(settings) as wh:
        return wh.rejected_rows_by_reason(rejects.relation, load_id)


# -- the whole run (the CLI) ---------------------------------------------------------------------
@dataclass
class RunSummary:
    """What one run did, for the closing summary."""

    run_id: str
    plan: Plan | None = None
    load: LoadReport | None = None
    dbt: DbtReport | None = None
    archived: list[str] = field(default_factory=list)
    mart_rows: dict[str, int] = field(default_factory=dict)
    rejected_rows: dict[str, int] = field(default_factory=dict)
    corrections: dict[str, tuple[int, int]] = field(default_factory=dict)  # key: added, removed
    timings: dict[str, float] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)  # bytes, by step
    peak_rss_per_step: bool = True  # False: the process's peak so far (no reset, not Linux)

    def lines(self) -> list[str]:
        out = [f"run {self.run_id}"]
        if self.load:
            out += [f"  {line}" for line in self.load.lines()]
        out += [
            f"  correction {shown(key)}: {added:,} play(s) added, {removed:,} removed "
            "(the new version against the one it superseded)"
            for key, (added, removed) in self.corrections.items()
        ]
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
        if self.peak_rss:
            label = "peak RSS" if self.peak_rss_per_step else "peak RSS of the process so far"
            peaks = (f"{step} {peak_memory.format_bytes(n)}" for step, n in self.peak_rss.items())
            out.append(f"  {label}: " + ", ".join(peaks))
        return out

    def warnings(self) -> list[str]:
        """The run's warnings: load warnings, then dbt's (warn-level tests)."""
        return [
            *(self.load.warnings() if self.load else ()),
            *(self.dbt.warnings if self.dbt else ()),
        ]


# What an interrupted run leaves, by step (every step is safe to repeat: see the module doc).
INTERRUPTED_STATE = {
    "extract": "nothing was loaded; the next run extracts again",
    "plan": "nothing was loaded; the next run starts over",
    "load": "each file is in the ledger whole or not at all; the next run loads the rest",
    "dbt build": "nothing was archived or published; the next run rebuilds the marts from "
    "what is loaded",
    "archive": "the build is recorded; the next run archives what is left and publishes",
    "publish": "the build is recorded; readers still see the previous publish until the next "
    "run publishes it",
}


def run(settings: Settings, *, progress: Progress = print, force_build: bool = False) -> RunSummary:
    """One pipeline run, the steps of the plan in order, holding the run lock (RunLocked when
    another run has it, before anything is extracted). Raises on failure; archives nothing
    unless dbt build succeeded. Ctrl-C or SIGTERM (:class:`~loaders.errors.Terminated`) raise
    :class:`~loaders.errors.Interrupted`, naming the step and the state it left."""
    from loaders.runlock import run_lock

    rds.require_source(settings)
    with run_lock(settings, progress=progress):
        return _run(settings, progress=progress, force_build=force_build)


def _run(settings: Settings, *, progress: Progress, force_build: bool) -> RunSummary:
    run_id = new_run_id()
    summary = RunSummary(run_id=run_id)
    landing = landing_store(settings)

    @contextmanager
    def step(name: str) -> Iterator[None]:
        progress(f"==> {name}")
        if not peak_memory.reset():
            summary.peak_rss_per_step = False
        started = time.perf_counter()
        try:
            yield
        except Terminated:
            raise Interrupted("SIGTERM", name, INTERRUPTED_STATE[name]) from None
        except KeyboardInterrupt:
            raise Interrupted(interrupt_signal(), name, INTERRUPTED_STATE[name]) from None
        except Exception as exc:  # a driver's "query interrupted", or a service failed
            if is_interrupt(exc):
                raise Interrupted(interrupt_signal(), name, INTERRUPTED_STATE[name]) from None
            if (failure := step_outage(exc, name, INTERRUPTED_STATE[name])) is not None:
                raise failure from None
            raise
        finally:
            summary.timings[name] = time.perf_counter() - started
            summary.peak_rss[name] = peak_memory.peak_bytes()

    with step("extract"):
        extracts = extract(settings, landing, run_id, progress=progress)
    with step("plan"):
        plan = summary.plan = plan_run(
            settings, landing, extracts, run_id=run_id, force_build=force_build, progress=progress
        )
        progress(f"  {plan.description}")
    if not plan.should_run:
        progress("nothing to do: skipping load, dbt build, archive and publish")
        return summary
    if plan.needs_build:
        with step("load"):
            summary.load = load_all(settings, landing, plan, progress=progress)
        with step("dbt build"):
            summary.dbt = build(settings, run_id)
        with step("archive"):
            summary.archived = archive(settings, landing, plan, summary.load, progress=progress)
    with step("publish"):
        summary.mart_rows = publish(settings, progress=progress)
        summary.rejected_rows = rejected_rows(settings, load_id=run_id)
        if summary.load is not None:
            superseded = summary.load.files_superseded
            summary.corrections = correction_effects(settings, superseded, load_id=run_id)
    return summary
