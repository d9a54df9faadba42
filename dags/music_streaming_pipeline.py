"""
### Music streaming ELT: RDS + S3 -> warehouse -> dbt KPI marts

Each run:

1. **check_rds_available**: the RDS source answers within a bounded wait, or the run fails.
2. **extract_rds_table** (mapped, one per table): `users` and `songs` in batches into landing.
3. **detect_new_work**: new stream files in landing and RDS tables whose content changed,
   compared with the warehouse's load ledger.
4. **has_new_work**: when nothing is new the rest of the run is skipped (the run succeeds and
   the log says why).
5. **load_raw** (mapped, one per changed table / group of stream files): exactly once, through
   the ledger; files that cannot be loaded are quarantined.
6. **dbt** (Cosmos, from a pre-built manifest): one task per model, its tests after it.
7. **record_build**, then **archive_stream_files** (only after every dbt task succeeded) and
   **publish_kpi_assets** (Airflow Assets for the KPI marts, for downstream DAGs).

Connections: `aws_rds_connection` (RDS), `aws_conn` (S3), `redshift_conn` (Redshift). Without
them the DAG uses the embedded stack in `MUSIC_ELT_WORKDIR` (see `dags/README.md`). The work is
done by the `loaders` package and the dbt project; this file is wiring only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import urllib.request
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseNotifier, TriggerRule, dag, get_current_context, task
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import (
    ExecutionMode,
    InvocationMode,
    LoadMode,
    SourceRenderingBehavior,
    TestBehavior,
)
from cosmos.operators.local import DbtSourceLocalOperator, DbtTestLocalOperator
from cosmos.profiles import RedshiftUserPasswordProfileMapping

if TYPE_CHECKING:
    from loaders.config import Settings
    from loaders.landing import LandingStore
    from loaders.pipeline import Work

log = logging.getLogger("music_elt.dag")

# -- configuration, read once from the environment at parse time (no I/O) ------------------------
DAG_ID = "music_streaming_pipeline"
DAG_DIR = Path(__file__).resolve().parent


def _path_setting(name: str, default: Path) -> Path:
    """An absolute path from the environment; relative paths are taken from the repository root
    (the DAG folder's parent), so parsing and every task agree whatever their cwd."""
    value = os.environ.get(name)
    path = Path(value).expanduser() if value else default
    return path if path.is_absolute() else (DAG_DIR.parent / path).resolve()


def _default_dbt_project() -> Path:
    """The dbt project shipped beside the DAG (deployments) or at the repository root."""
    beside = DAG_DIR / "dbt_project"
    return beside if (beside / "dbt_project.yml").is_file() else DAG_DIR.parent / "dbt_project"


TARGET = os.environ.get("MUSIC_ELT_TARGET", "duckdb")
WORKDIR = _path_setting("MUSIC_ELT_WORKDIR", Path(".music-elt"))
DUCKDB_PATH = _path_setting("MUSIC_ELT_DUCKDB_PATH", WORKDIR / "warehouse.duckdb")
DBT_PROJECT_DIR = _path_setting("MUSIC_ELT_DBT_PROJECT_DIR", _default_dbt_project())
DBT_MANIFEST = _path_setting(
    "MUSIC_ELT_DBT_MANIFEST", DBT_PROJECT_DIR / "target" / "airflow" / "manifest.json"
)
RDS_TABLES = tuple(
    t.strip() for t in os.environ.get("MUSIC_ELT_RDS_TABLES", "users,songs").split(",") if t
)
FILES_PER_LOAD_TASK = int(os.environ.get("MUSIC_ELT_FILES_PER_LOAD_TASK", "25"))
RDS_WAIT_SECONDS = float(os.environ.get("MUSIC_ELT_RDS_WAIT_SECONDS", "120"))
RETRIES = int(os.environ.get("MUSIC_ELT_TASK_RETRIES", "2"))
SCHEDULE = os.environ.get("MUSIC_ELT_SCHEDULE", "@hourly") or None
# A DuckDB file has one writer at a time: every task that opens it takes the one slot of this
# pool (created by `make airflow`, `make dag-run` and the tests; see dags/README.md).
DUCKDB_POOL = os.environ.get("MUSIC_ELT_DUCKDB_POOL", "music_elt_duckdb")
WAREHOUSE_POOL = DUCKDB_POOL if TARGET == "duckdb" else "default_pool"

RDS_CONN_ID, S3_CONN_ID, REDSHIFT_CONN_ID = "aws_rds_connection", "aws_conn", "redshift_conn"
SLACK_CONN_ID = os.environ.get("MUSIC_ELT_SLACK_CONN_ID", "slack_webhook")

KPI_MARTS = ("fct_genre_kpis_daily", "fct_listening_kpis_hourly", "fct_top_artists_hourly")
KPI_ASSETS = {
    mart: Asset(name=f"music_elt.marts.{mart}", uri=f"x-music-elt://warehouse/marts/{mart}")
    for mart in KPI_MARTS
}


def _env() -> dict[str, str]:
    """The environment the loaders read, with the paths this DAG resolved."""
    return {
        **os.environ,
        "MUSIC_ELT_TARGET": TARGET,
        "MUSIC_ELT_WORKDIR": str(WORKDIR),
        "MUSIC_ELT_DUCKDB_PATH": str(DUCKDB_PATH),
        "MUSIC_ELT_DBT_PROJECT_DIR": str(DBT_PROJECT_DIR),
    }


# -- alerts --------------------------------------------------------------------------------------
class PipelineFailureNotifier(BaseNotifier):
    """Says which task failed and, for a dbt test task, which tests failed.

    The message always goes to the task log (logger ``music_elt.alerts``); it is also posted to
    Slack when ``MUSIC_ELT_SLACK_WEBHOOK_URL`` is set or the connection ``slack_webhook`` exists
    (its password is the webhook URL, or the token after its host).
    """

    def __init__(self, slack_conn_id: str = SLACK_CONN_ID) -> None:
        super().__init__()
        self.slack_conn_id = slack_conn_id

    def notify(self, context: Any) -> None:
        message = failure_message(context)
        logging.getLogger("music_elt.alerts").error(message)
        url = self._webhook_url()
        if not url:
            return
        request = urllib.request.Request(  # noqa: S310 (an https URL the operator configured)
            url,
            data=json.dumps({"text": message}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                response.read()
        except OSError as exc:
            logging.getLogger("music_elt.alerts").error("Slack webhook failed: %s", exc)

    def _webhook_url(self) -> str:
        if url := os.environ.get("MUSIC_ELT_SLACK_WEBHOOK_URL"):
            return url
        try:
            conn = _connection(self.slack_conn_id)
        except Exception:
            return ""
        if conn is None or not conn.get("password"):
            return ""
        token = str(conn["password"])
        if token.startswith("https://") or token.startswith("http://"):
            return token
        host = str(conn.get("host") or "https://hooks.slack.com/services")
        if "://" not in host:
            host = "https://" + host
        return host.rstrip("/") + "/" + token.lstrip("/")


def failure_message(context: Any) -> str:
    """One alert text from a task's failure context."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    task_id = getattr(ti, "task_id", "?")
    map_index = getattr(ti, "map_index", -1)
    where = f"{task_id}[{map_index}]" if map_index is not None and map_index >= 0 else task_id
    run_id = getattr(dag_run, "run_id", None) or context.get("run_id", "?")
    error = context.get("exception")
    lines = [f"{DAG_ID}: task {where} failed (run {run_id}, try {getattr(ti, 'try_number', '?')})"]
    nodes = failed_dbt_nodes(str(error or ""))
    if nodes:
        is_test = isinstance(context.get("task"), DbtTestLocalOperator)
        lines.append(("failing dbt tests: " if is_test else "dbt errors: ") + "; ".join(nodes))
    elif error is not None:
        first_line = next(iter(str(error).strip().splitlines()), "")
        lines.append(f"error: {type(error).__name__}: {first_line[:500]}".rstrip(": "))
    return "\n".join(lines)


_DBT_NODE_LINE = re.compile(r"^([A-Za-z0-9_.]+): (.*)$")


def failed_dbt_nodes(error: str) -> list[str]:
    """``name: first line of message`` for each failed node in a Cosmos dbt error, e.g.
    ``unique_dim_users_user_id: Got 3 results, configured to fail if != 0``."""
    marker = "dbt invocation completed with errors:"
    if marker not in error:
        return []
    body = marker.join(error.split(marker)[1:]).lstrip(" ")
    return [
        f"{match.group(1)}: {match.group(2).strip()}"[:300]
        for line in body.splitlines()
        if (match := _DBT_NODE_LINE.match(line))
    ]


# -- runtime helpers (called inside tasks only) ---------------------------------------------------
def _connection(conn_id: str) -> dict[str, Any] | None:
    """An Airflow connection's fields as a plain dict, or None when it is not defined."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
    return {
        "conn_type": conn.conn_type,
        "host": conn.host,
        "port": conn.port,
        "login": conn.login,
        "password": conn.password,
        "schema": conn.schema,
        "extra": conn.extra_dejson,
    }


def _settings() -> Settings:
    """Pipeline settings: the environment, overridden by whichever connections exist."""
    from loaders.connections import settings_from_connections

    return settings_from_connections(
        _env(),
        rds=_connection(RDS_CONN_ID),
        s3=_connection(S3_CONN_ID),
        redshift=_connection(REDSHIFT_CONN_ID) if TARGET == "redshift" else None,
    )


def _landing(settings: Settings) -> LandingStore:
    """The landing zone; on S3 with the ``aws_conn`` connection's credentials when it exists."""
    from loaders import pipeline
    from loaders.landing import S3Landing

    if settings.landing_url.startswith("s3://") and _connection(S3_CONN_ID) is not None:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        client = S3Hook(aws_conn_id=S3_CONN_ID).get_conn()
        return S3Landing(settings.landing_url, client=client)
    return pipeline.landing_store(settings)


def _load_id() -> str:
    """This DAG run's load id: sortable (UTC time first) and the same in every task and retry."""
    dag_run = get_current_context()["dag_run"]
    when = dag_run.run_after or dag_run.logical_date or datetime.now()
    suffix = hashlib.sha256(dag_run.run_id.encode()).hexdigest()[:6]
    return f"{when:%Y%m%dT%H%M%SZ}-{suffix}"


def _work_to_xcom(work: Work) -> dict[str, Any]:
    return {
        "snapshots": [json.loads(e.to_json()) for e in work.snapshots],
        "stream_files": [asdict(obj) for obj in work.stream_files],
        "archive_ready": [asdict(obj) for obj in work.archive_ready],
        "unbuilt_loads": work.unbuilt_loads,
        "tracks_changed": work.tracks_changed,
        "needs_build": work.needs_build,
        "description": work.describe(),
    }


def _work_from_xcom(data: dict[str, Any]) -> Work:
    from loaders.landing import LandedObject
    from loaders.pipeline import Work
    from loaders.rds import TableExtract

    return Work(
        snapshots=tuple(TableExtract.from_json(json.dumps(e)) for e in data.get("snapshots", ())),
        stream_files=tuple(LandedObject(**obj) for obj in data.get("stream_files", ())),
        archive_ready=tuple(LandedObject(**obj) for obj in data.get("archive_ready", ())),
        unbuilt_loads=bool(data.get("unbuilt_loads")),
        tracks_changed=bool(data.get("tracks_changed")),
    )


def load_groups(work: dict[str, Any], files_per_task: int) -> list[dict[str, Any]]:
    """One load per changed RDS table, then the new stream files in groups of ``files_per_task``."""
    groups = [
        {"label": f"raw_rds.{e['table']}", "snapshots": [e], "stream_files": []}
        for e in work["snapshots"]
    ]
    files = work["stream_files"]
    size = max(1, files_per_task)
    for start in range(0, len(files), size):
        chunk = files[start : start + size]
        groups.append(
            {
                "label": f"streams {start + 1}-{start + len(chunk)} of {len(files)}",
                "snapshots": [],
                "stream_files": chunk,
            }
        )
    return groups


def _as_list(values: Any) -> list[Any]:
    """The outputs of a mapped task as a list, indexed up to its length (iterating Airflow's lazy
    sequence to its end logs a spurious "XCom not found" error)."""
    if values is None:
        return []
    return [values[i] for i in range(len(values))]


def _say(message: str) -> None:
    log.info("%s", message)


# -- the dbt task group's configuration ----------------------------------------------------------
def dbt_profile_config(target: str = TARGET) -> ProfileConfig:
    """duckdb/postgres: the project's profiles.yml (it reads MUSIC_ELT_* / WAREHOUSE_*);
    redshift: a profile built from the ``redshift_conn`` connection when a task runs."""
    if target == "redshift":
        return ProfileConfig(
            profile_name="music_elt",
            target_name="redshift",
            profile_mapping=RedshiftUserPasswordProfileMapping(
                conn_id=REDSHIFT_CONN_ID,
                profile_args={
                    "schema": os.environ.get("WAREHOUSE_SCHEMA", "public"),
                    "threads": 4,
                },
            ),
        )
    return ProfileConfig(
        profile_name="music_elt",
        target_name=target,
        profiles_yml_filepath=DBT_PROJECT_DIR / "profiles.yml",
    )


def _dbt_env() -> dict[str, str]:
    """Variables for dbt that are not secrets (they are stored with the serialized DAG)."""
    env = {"MUSIC_ELT_TARGET": TARGET, "DBT_SEND_ANONYMOUS_USAGE_STATS": "False"}
    if TARGET == "duckdb":
        env["MUSIC_ELT_DUCKDB_PATH"] = str(DUCKDB_PATH)  # absolute: Cosmos runs in a copy
    return env


def _check_manifest() -> None:
    if not DBT_MANIFEST.is_file():
        raise FileNotFoundError(
            f"no dbt manifest at {DBT_MANIFEST}: run `make manifest` (or `dbt parse "
            f"--target-path {DBT_MANIFEST.parent}`) or set MUSIC_ELT_DBT_MANIFEST"
        )


FULL_REFRESH_IF_TRACKS_CHANGED = (
    "{{ (ti.xcom_pull(task_ids='detect_new_work', key='work') or {})"
    ".get('tracks_changed', False) }}"
)

notifier = PipelineFailureNotifier()
default_args = {
    "owner": "data-eng",
    "retries": RETRIES,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "on_failure_callback": [notifier],
}


@dag(
    dag_id=DAG_ID,
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    doc_md=__doc__,
    tags=["music-elt", "dbt", "cosmos"],
)
def music_streaming_pipeline() -> None:
    @task(retries=0, execution_timeout=timedelta(seconds=RDS_WAIT_SECONDS + 60))
    def check_rds_available() -> None:
        """Connect to the RDS source, retrying refused connections for a bounded time."""
        from loaders import rds

        settings = _settings()
        with rds.connect(settings, wait_seconds=RDS_WAIT_SECONDS) as conn, conn.cursor() as cur:
            cur.execute("select 1")
        log.info("RDS source is available (%s)", "embedded" if settings.embedded_rds else "RDS")

    @task(map_index_template="{{ table }}")
    def extract_rds_table(table: str) -> dict[str, Any]:
        """Extract one RDS table in batches into landing: rds/<table>/<load id>/part-*.csv.gz."""
        from loaders import pipeline

        settings = replace(_settings(), rds_tables=(table,))
        (extract,) = pipeline.extract_rds(settings, _landing(settings), _load_id(), _say)
        return json.loads(extract.to_json())

    @task(pool=WAREHOUSE_POOL)
    def detect_new_work(extracts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Compare landing and the fresh extracts with the ledger: what this run must load.

        Returns the load groups (mapped over by ``load_raw``); the whole work goes to the
        XCom key ``work``."""
        from loaders import pipeline
        from loaders.rds import TableExtract

        settings = _settings()
        found = pipeline.find_work(
            settings,
            _landing(settings),
            [TableExtract.from_json(json.dumps(e)) for e in _as_list(extracts)],
        )
        work = _work_to_xcom(found)
        log.info("%s", work["description"])
        get_current_context()["ti"].xcom_push(key="work", value=work)
        return load_groups(work, FILES_PER_LOAD_TASK)

    @task.short_circuit
    def has_new_work(work: dict[str, Any]) -> bool:
        """Skip the rest of the run when there is nothing to load, build or archive."""
        if work["needs_build"] or work["archive_ready"]:
            log.info("work found: %s", work["description"])
            return True
        log.info(
            "skipping load, dbt and archive: no new stream file arrived and the RDS tables "
            "did not change (%s)",
            work["description"],
        )
        return False

    @task(pool=WAREHOUSE_POOL, map_index_template="{{ load_group }}")
    def load_raw(group: dict[str, Any]) -> dict[str, Any]:
        """Load one changed table or one group of stream files, exactly once via the ledger."""
        from loaders import pipeline

        get_current_context()["load_group"] = group["label"]  # shown as the map index
        settings = _settings()
        work = _work_from_xcom(group)
        landing = _landing(settings)
        report = pipeline.load(settings, landing, work, load_id=_load_id(), progress=_say)
        return {
            "files_loaded": [asdict(obj) for obj in report.files_loaded],
            "files_skipped": [asdict(obj) for obj in report.files_skipped],
            "files_rejected": [[asdict(obj), reason] for obj, reason in report.files_rejected],
            "stream_rows": report.stream_rows,
            "snapshot_rows": report.snapshot_rows,
        }

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def collect_loads(reports: list[dict[str, Any]] | None) -> dict[str, Any]:
        """Sum up the loads; the time now is when the dbt build starts (for the build log)."""
        from loaders.pipeline import utcnow

        reports = _as_list(reports)
        loaded = [obj for r in reports for obj in r["files_loaded"] + r["files_skipped"]]
        rejected = [entry for r in reports for entry in r["files_rejected"]]
        snapshots = {t: n for r in reports for t, n in r["snapshot_rows"].items()}
        log.info(
            "loaded %d stream file(s), %d rows; %d rejected (quarantined); snapshots: %s",
            len(loaded),
            sum(r["stream_rows"] for r in reports),
            len(rejected),
            snapshots or "none",
        )
        for obj, reason in rejected:
            log.warning("rejected %s: %s", obj["key"], reason)
        return {"loaded_files": loaded, "build_started_at": utcnow().isoformat()}

    dbt = DbtTaskGroup(
        group_id="dbt",
        project_config=ProjectConfig(
            dbt_project_path=DBT_PROJECT_DIR,
            manifest_path=DBT_MANIFEST,
            install_dbt_deps=False,
            env_vars=_dbt_env(),
        ),
        profile_config=dbt_profile_config(),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.LOCAL, invocation_mode=InvocationMode.DBT_RUNNER
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.AFTER_EACH,
            should_detach_multiple_parents_tests=True,
            source_rendering_behavior=SourceRenderingBehavior.WITH_TESTS_OR_FRESHNESS,
            emit_datasets=False,
            enable_mock_profile=False,
        ),
        operator_args={
            "pool": WAREHOUSE_POOL,
            # a new songs snapshot reaches marts already built only through a full refresh
            # (the incremental marts recompute periods with new plays); test tasks ignore it
            "full_refresh": FULL_REFRESH_IF_TRACKS_CHANGED,
            "append_env": True,
            "emit_datasets": False,
        },
    )

    @task(pool=WAREHOUSE_POOL)
    def record_build(loads: dict[str, Any]) -> None:
        """Record the green dbt build: its loads will not be rebuilt by the next run."""
        from loaders import pipeline

        started = datetime.fromisoformat(loads["build_started_at"])
        pipeline.record_build(_settings(), load_id=_load_id(), started=started)

    @task(pool=WAREHOUSE_POOL)
    def archive_stream_files(work: dict[str, Any], loads: dict[str, Any]) -> list[str]:
        """Move the stream files this and earlier runs loaded to archive/streams/<date>/."""
        from loaders import pipeline
        from loaders.landing import LandedObject

        settings = _settings()
        done = [*work["archive_ready"], *loads["loaded_files"]]
        objects = {obj["key"]: LandedObject(**obj) for obj in done}
        return pipeline.archive(settings, _landing(settings), list(objects.values()), progress=_say)

    @task(pool=WAREHOUSE_POOL, outlets=list(KPI_ASSETS.values()))
    def publish_kpi_assets() -> dict[str, int]:
        """Emit an asset event per KPI mart (with its row count) for DAGs scheduled on them."""
        from loaders import pipeline

        counts = pipeline.mart_row_counts(_settings())
        outlet_events = get_current_context()["outlet_events"]
        for mart, asset in KPI_ASSETS.items():
            outlet_events[asset].extra = {"rows": counts.get(mart, 0), "load_id": _load_id()}
        log.info("published %s", ", ".join(f"marts.{m}: {n:,} rows" for m, n in counts.items()))
        return counts

    rds_ok = check_rds_available()
    extracts = extract_rds_table.expand(table=list(RDS_TABLES))
    found = detect_new_work(extracts)
    go = has_new_work(found["work"])
    loaded = load_raw.expand(group=found)
    loads = collect_loads(loaded)
    built = record_build(loads)

    rds_ok >> extracts
    go >> loaded
    loads >> dbt >> built
    built >> [archive_stream_files(found["work"], loads), publish_kpi_assets()]


_check_manifest()
pipeline_dag = music_streaming_pipeline()

# A failing data test (or source freshness check) is not transient: they never retry; models,
# loads and extracts do.
for _task in pipeline_dag.tasks:
    if isinstance(_task, DbtTestLocalOperator | DbtSourceLocalOperator):
        _task.retries = 0
