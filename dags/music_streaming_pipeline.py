"""
### Music streaming ELT: RDS + S3 -> warehouse -> dbt KPI marts

Each run executes the plan of `loaders.pipeline` (the same steps as `music-elt run`):

1. **check_rds_available**, then **extract** (mapped, one per RDS table) into landing.
2. **plan**: what is new (stream files, changed tables, a green build not yet published)
   against the warehouse's ledger, and the load groups. **should_run** skips the rest when
   there is nothing to do (the run succeeds and the log says why).
3. **load** (mapped over the plan's load groups): exactly once through the ledger; files that
   cannot be loaded are quarantined; an outage fails the task and touches nothing.
4. **dbt** (Cosmos watcher mode): one `dbt build` that records the green build of this run,
   reported by one task per model (and its tests); a clear builds again.
5. **archive** and **publish** (Assets of the KPI marts), after the build, each once it is green.

Tasks that write hold the warehouse's run lock (the CLI's too); every task has a timeout.

Connections: `aws_rds_connection`, `aws_conn`, `postgres_conn` or `redshift_conn`; alerts:
`slack_webhook`, `pagerduty_events`. This file is wiring only (see `dags/README.md`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import dag, get_current_context, task

from music_elt_airflow import runtime
from music_elt_airflow.alerts import PipelineAlert

config = runtime.DagConfig.from_env(dag_folder=Path(__file__).parent)
config.check_manifest()
KPI_ASSETS = runtime.kpi_assets(config)  # the dbt models tagged kpi
WAREHOUSE = config.warehouse_pool


def _context() -> tuple[Any, str]:
    """This task's pipeline settings and the run id shared by every task of the DAG run."""
    return runtime.settings(config), runtime.run_id(get_current_context()["dag_run"])


@dag(
    dag_id="music_streaming_pipeline",
    schedule=runtime.schedule(config),  # with an SQS queue, also on each new stream file
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["music-elt", "dbt", "cosmos"],
    default_args={
        "owner": "data-eng",
        "retries": config.retries,
        "retry_delay": timedelta(seconds=config.retry_delay_seconds),
        "execution_timeout": config.task_timeout,
        "retry_exponential_backoff": True,
        "on_failure_callback": [PipelineAlert()],
        "on_execute_callback": [runtime.reset_peak_rss],
        "on_success_callback": [runtime.log_peak_rss],  # each task's peak RSS in its log
    },
)
def music_streaming_pipeline() -> None:
    from loaders import pipeline, rds
    from loaders.pipeline import LoadGroup, LoadReport, Plan

    @runtime.task(retries=0, execution_timeout=timedelta(seconds=config.rds_wait_seconds + 60))
    def check_rds_available() -> None:
        """Connect to the RDS source, retrying refused connections for a bounded time."""
        with rds.connect(runtime.settings(config), wait_seconds=config.rds_wait_seconds):
            print("the RDS source answers")

    @runtime.task(map_index_template="{{ table }}")
    def extract(table: str) -> dict[str, Any]:
        """One RDS table in batches into landing: rds/<table>/<run id>/part-*.csv.gz."""
        settings, run_id = _context()
        (done,) = pipeline.extract(settings, runtime.landing(settings), run_id, tables=[table])
        return done.model_dump(mode="json")

    @runtime.task(pool=WAREHOUSE)
    def plan(extracts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Compare landing and the fresh extracts with the ledger: the plan of this run (XCom
        ``plan``) and its load groups (what ``load`` maps over)."""
        from loaders.rds import TableExtract

        settings, run_id = _context()
        found = [TableExtract.model_validate(e) for e in runtime.as_list(extracts)]
        with runtime.run_lock(settings):
            decided = pipeline.plan_run(settings, runtime.landing(settings), found, run_id=run_id)
        print(decided.description)
        get_current_context()["ti"].xcom_push(key="plan", value=decided.model_dump(mode="json"))
        groups = decided.load_groups(settings.files_per_load_group) if decided.should_run else []
        return [group.model_dump(mode="json") for group in groups]

    @task.short_circuit
    def should_run(planned: dict[str, Any]) -> bool:
        """Skip load, dbt, archive and publish when nothing is new (the plan decided)."""
        print(planned["description"])
        return bool(planned["should_run"])

    @runtime.task(pool=WAREHOUSE, map_index_template="{{ group['label'] }}")
    def load(group: dict[str, Any]) -> dict[str, Any]:
        """Load one changed table or one group of stream files, exactly once via the ledger."""
        settings, run_id = _context()
        landing = runtime.landing(settings)
        with runtime.run_lock(settings):
            done = pipeline.load(settings, landing, LoadGroup.model_validate(group), load_id=run_id)
        PipelineAlert().warn(get_current_context(), done.warnings())  # e.g. a broken re-upload
        return done.model_dump(mode="json")

    @runtime.task(trigger_rule="none_failed")  # no load group (only archiving left): no failure
    def loaded(reports: list[dict[str, Any]]) -> dict[str, Any]:
        """Sum up the loads."""
        total = LoadReport.merge([LoadReport.model_validate(r) for r in runtime.as_list(reports)])
        print("\n".join(total.lines()))
        return total.model_dump(mode="json")

    # one `dbt build` that records this run's green build, one task per model reporting it
    dbt = runtime.dbt_task_group(config)

    @runtime.task(pool=WAREHOUSE)
    def archive(planned: dict[str, Any], loads: dict[str, Any]) -> list[str]:
        """Move the stream file versions this and earlier runs loaded to archive/streams/."""
        settings, run_id = _context()
        with runtime.run_lock(settings):
            pipeline.require_green_build(settings, run_id)
            return pipeline.archive(
                settings,
                runtime.landing(settings),
                Plan.model_validate(planned),
                LoadReport.model_validate(loads),
                progress=print,
            )

    @runtime.task(pool=WAREHOUSE, outlets=list(KPI_ASSETS.values()))
    def publish() -> dict[str, int]:
        """Publish the marts for readers; an asset event per KPI mart (extra: rows, run id)."""
        settings, run_id = _context()
        with runtime.run_lock(settings):
            pipeline.require_green_build(settings, run_id)
            counts = pipeline.publish(settings, progress=print)
        events = get_current_context()["outlet_events"]
        for name, asset in KPI_ASSETS.items():
            events[asset].extra = {"rows": counts.get(name, 0), "load_id": run_id}
        return counts

    extracts = extract.expand(table=list(config.settings.rds_tables))
    check_rds_available() >> extracts
    groups = plan(extracts)
    planned = groups["plan"]
    loads = load.expand(group=groups)
    should_run(planned) >> loads
    loads = loaded(loads)
    archived = archive(planned, loads)
    loads >> dbt
    runtime.build_task(dbt) >> archived >> publish()  # the model tasks report beside them


music_streaming_pipeline()
