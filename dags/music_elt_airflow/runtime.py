"""The DAG's configuration and the run-time glue its tasks call.

Read once at parse time (no I/O): :class:`DagConfig`, the pipeline :class:`~loaders.config.Settings`
from the environment with paths made absolute (Cosmos runs dbt in a copy of the project, so a
relative DuckDB path would break), plus the few settings only a DAG has. On PostgreSQL and
Redshift the parse-time warehouse names the connection its login comes from
(``login_from``). At run time, :func:`settings` builds the same model from the variables and
whichever Airflow connections exist.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Self

from airflow.sdk import Asset
from cosmos import ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import (
    ExecutionMode,
    InvocationMode,
    LoadMode,
    SourceRenderingBehavior,
    TestBehavior,
)
from cosmos.profiles import (
    PostgresUserPasswordProfileMapping,
    RedshiftUserPasswordProfileMapping,
)
from pydantic import Field, field_validator, model_validator

from loaders import manifest, peak_memory, rds
from loaders.config import ConfigError, Settings, ValidatedModel, variables
from loaders.connections import (
    POSTGRES_CONN_ID,
    RDS_CONN_ID,
    REDSHIFT_CONN_ID,
    S3_CONN_ID,
    WAREHOUSE_CONN_IDS,
    check_no_cli_variables,
    settings_from_connections,
)
from loaders.dbt import build_flags
from loaders.errors import TerminalError, one_line
from loaders.landing import LandingStore
from loaders.serving import PUBLISHED_SCHEMA
from music_elt_airflow.connections import connection

log = logging.getLogger("music_elt.runtime")
# the checkout's DAG folder, beside which this package lives (the default of DagConfig.from_env)
DAGS = Path(__file__).resolve().parent.parent
# How Cosmos runs the dbt project (bench/dag_bench.py measures them side by side):
COSMOS_MODES = {
    # one `dbt build` (watcher producer), reported by one task per model (and its tests)
    "watcher": (ExecutionMode.WATCHER, InvocationMode.DBT_RUNNER, TestBehavior.AFTER_EACH),
    "watcher-subprocess": (
        ExecutionMode.WATCHER,
        InvocationMode.SUBPROCESS,
        TestBehavior.AFTER_EACH,
    ),
    # one `dbt build --select <model>` per model task, its tests included
    "build": (ExecutionMode.LOCAL, InvocationMode.DBT_RUNNER, TestBehavior.BUILD),
    # a `dbt run` task per model and a `dbt test` task after it
    "after-each": (ExecutionMode.LOCAL, InvocationMode.DBT_RUNNER, TestBehavior.AFTER_EACH),
}


class DagConfig(ValidatedModel):
    """What the DAG file needs at parse time: the pipeline's settings (each task completes them
    with the Airflow connections) and the settings only a DAG has, each read from the variable
    its alias names."""

    settings: Settings
    # check_rds_available's wait (the CLI waits Settings.rds_wait_seconds)
    rds_wait_seconds: float = Field(120.0, alias="MUSIC_ELT_RDS_WAIT_SECONDS")
    retries: int = Field(2, alias="MUSIC_ELT_TASK_RETRIES")
    retry_delay_seconds: float = Field(30.0, alias="MUSIC_ELT_RETRY_DELAY_SECONDS")
    # every task but the dbt build
    task_timeout_seconds: float = Field(1800.0, alias="MUSIC_ELT_TASK_TIMEOUT_SECONDS")
    # the dbt build (the producer) and its model tasks
    build_timeout_seconds: float = Field(7200.0, alias="MUSIC_ELT_BUILD_TIMEOUT_SECONDS")
    schedule: str | None = Field("@hourly", alias="MUSIC_ELT_SCHEDULE")  # empty: none
    duckdb_pool: str = Field("music_elt_duckdb", alias="MUSIC_ELT_DUCKDB_POOL")
    cosmos_mode: str = Field("watcher", alias="MUSIC_ELT_COSMOS_MODE")  # see COSMOS_MODES
    # S3 notifications of new stream files: event-driven runs
    sqs_queue_url: str = Field("", alias="MUSIC_ELT_SQS_QUEUE_URL")
    # SQS long polling (1-20 s): how long one receive waits
    sqs_wait_seconds: int = Field(20, alias="MUSIC_ELT_SQS_WAIT_SECONDS")

    @field_validator("schedule")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _check(self) -> Self:
        for name, value in (
            ("MUSIC_ELT_TASK_TIMEOUT_SECONDS", self.task_timeout_seconds),
            ("MUSIC_ELT_BUILD_TIMEOUT_SECONDS", self.build_timeout_seconds),
        ):
            if value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value}")
        if self.sqs_queue_url and not self.settings.landing_url.startswith("s3://"):
            raise ConfigError(
                "MUSIC_ELT_SQS_QUEUE_URL needs the landing zone on S3 (MUSIC_ELT_LANDING="
                "s3://bucket/prefix): the queue receives that bucket's notifications"
            )
        if not 1 <= self.sqs_wait_seconds <= 20:
            raise ConfigError(
                f"MUSIC_ELT_SQS_WAIT_SECONDS must be 1 to 20 (SQS long polling), "
                f"got {self.sqs_wait_seconds}"
            )
        if self.cosmos_mode not in COSMOS_MODES:
            raise ConfigError(
                f"MUSIC_ELT_COSMOS_MODE={self.cosmos_mode!r}: choose one of "
                + ", ".join(COSMOS_MODES)
            )
        return self

    @property
    def task_timeout(self) -> timedelta:
        return timedelta(seconds=self.task_timeout_seconds)

    @property
    def build_timeout(self) -> timedelta:
        return timedelta(seconds=self.build_timeout_seconds)

    @property
    def target(self) -> str:
        return self.settings.warehouse.kind

    @property
    def warehouse_pool(self) -> str:
        """A DuckDB file has one writer: every task that opens it takes this pool's one slot."""
        return self.duckdb_pool if self.target == "duckdb" else "default_pool"

    @classmethod
    def from_env(
        cls, env: dict[str, str] | None = None, *, dag_folder: Path | None = None
    ) -> DagConfig:
        """The configuration for the DAG file in ``dag_folder`` (default: the repository's
        dags/). Relative paths are taken from that folder's parent, so that parsing and every
        task agree whatever their working directory; the dbt project is looked for beside the
        DAG (a deployment's ``dags/dbt_project``), then in that parent."""
        env = dict(os.environ if env is None else env)
        check_no_cli_variables(env)  # secrets and endpoints come from connections only
        root = (dag_folder or DAGS).resolve().parent
        paths = (
            "MUSIC_ELT_WORKDIR",
            "MUSIC_ELT_DUCKDB_PATH",
            "MUSIC_ELT_DUCKDB_TEMP_DIR",
            "MUSIC_ELT_DBT_PROJECT_DIR",
        )
        for name in paths:
            if env.get(name):
                env[name] = str(_absolute(env[name], root))
        env.setdefault("MUSIC_ELT_WORKDIR", str(root / ".music-elt"))
        beside = (dag_folder or DAGS) / "dbt_project"
        project = beside if (beside / "dbt_project.yml").is_file() else root / "dbt_project"
        env.setdefault("MUSIC_ELT_DBT_PROJECT_DIR", str(project.resolve()))
        project = Path(env["MUSIC_ELT_DBT_PROJECT_DIR"])
        # the checkout's manifest for the target (make manifest), else a bundle's (make bundle)
        target_name = env.get("MUSIC_ELT_TARGET") or "duckdb"
        parsed = project / "target" / f"airflow-{target_name}" / "manifest.json"
        manifest_path = env.get("MUSIC_ELT_DBT_MANIFEST") or (
            parsed if parsed.is_file() else project / "target" / "airflow" / "manifest.json"
        )
        env["MUSIC_ELT_DBT_MANIFEST"] = str(_absolute(str(manifest_path), root))
        values = variables(env)
        if conn_id := WAREHOUSE_CONN_IDS.get(env.get("MUSIC_ELT_TARGET", "")):
            # host and login come from the target's connection when a task runs
            values["warehouse"]["login_from"] = conn_id
        dag_only = {
            name: env[str(field.alias)]
            for name, field in cls.model_fields.items()
            if field.alias in env  # an empty variable too: MUSIC_ELT_SCHEDULE="" is no schedule
        }
        return cls.from_values({"settings": Settings.from_values(values), **dag_only})

    @property
    def manifest(self) -> Path:
        assert self.settings.dbt_manifest is not None
        return self.settings.dbt_manifest

    def check_manifest(self) -> None:
        if not self.manifest.is_file():
            raise FileNotFoundError(
                f"no dbt manifest at {self.manifest}: run `make manifest DBT_TARGET="
                f"{self.target}` (or deploy `make bundle TARGET={self.target}`) or set "
                "MUSIC_ELT_DBT_MANIFEST"
            )


def _absolute(value: str, root: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (root / path).resolve()


def kpi_assets(config: DagConfig) -> dict[str, Asset]:
    """An Airflow Asset per published KPI mart (``marts.<name>``), the models the DAG's dbt
    manifest tags ``kpi`` (parse time: a local file read)."""
    return {
        mart.name: Asset(
            name=f"music_elt.marts.{mart.name}",
            uri=f"x-music-elt://warehouse/{PUBLISHED_SCHEMA}/{mart.name}",
        )
        for mart in manifest.kpi_marts(manifest.load_manifest(config.manifest))
    }


STREAMS_ASSET = "music_elt.landing.streams"


def schedule(config: DagConfig) -> Any:
    """The DAG's schedule: ``MUSIC_ELT_SCHEDULE`` (a cron expression or preset, UTC; empty:
    none). With ``MUSIC_ELT_SQS_QUEUE_URL`` the DAG also runs on the asset
    ``music_elt.landing.streams``, whose watcher reads the queue of the bucket's notifications
    (:mod:`music_elt_airflow.events`); the schedule stays as a safety net."""
    if not config.sqs_queue_url:
        return config.schedule
    from airflow.sdk import AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable

    from loaders.landing import STREAMS_PREFIX
    from music_elt_airflow.events import StreamFilesTrigger

    prefix = config.settings.landing_url[len("s3://") :].partition("/")[2].strip("/")
    trigger = StreamFilesTrigger(
        sqs_queue=config.sqs_queue_url,
        aws_conn_id=S3_CONN_ID,
        streams_prefix=(prefix + "/" if prefix else "") + STREAMS_PREFIX,
        max_messages=10,  # SQS's most per receive
        num_batches=10,  # up to 100 notifications make one event
        wait_time_seconds=config.sqs_wait_seconds,
        waiter_delay=0,  # the next long poll starts at once
    )
    streams = Asset(
        name=STREAMS_ASSET,
        uri="x-music-elt://landing/streams",
        watchers=[AssetWatcher(name="music_elt_stream_notifications", trigger=trigger)],
    )
    if config.schedule is None:
        return [streams]
    timetable = CronTriggerTimetable(config.schedule, timezone="UTC")
    return AssetOrTimeSchedule(timetable=timetable, assets=[streams])


# -- at run time ---------------------------------------------------------------------------------
def settings(config: DagConfig) -> Settings:
    """Pipeline settings: the parse-time environment, completed by the connections that exist
    (without ``aws_rds_connection``, the source is the embedded stand-in)."""
    base = config.settings
    env = {
        **os.environ,
        "MUSIC_ELT_TARGET": config.target,
        "MUSIC_ELT_WORKDIR": str(base.workdir),
        "MUSIC_ELT_DUCKDB_PATH": str(base.warehouse.duckdb_path),
        "MUSIC_ELT_DUCKDB_TEMP_DIR": str(base.warehouse.duckdb_temp_dir),
        "MUSIC_ELT_DBT_PROJECT_DIR": str(base.dbt_project_dir),
        "MUSIC_ELT_DBT_MANIFEST": str(config.manifest),
    }
    current = settings_from_connections(
        env,
        rds=connection(RDS_CONN_ID),
        s3=connection(S3_CONN_ID),
        postgres=connection(POSTGRES_CONN_ID) if config.target == "postgres" else None,
        redshift=connection(REDSHIFT_CONN_ID) if config.target == "redshift" else None,
    )
    if current.embedded_rds:  # no aws_rds_connection: the demo stack's stand-in
        from loaders.demo.embedded import embedded_server

        rds.serve_embedded(embedded_server)
    return current


def landing(current: Settings) -> LandingStore:
    """The landing zone; on S3 with the ``aws_conn`` connection's credentials when it exists."""
    from loaders import pipeline
    from loaders.landing import S3Landing

    if current.landing_url.startswith("s3://") and connection(S3_CONN_ID) is not None:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Landing(current.landing_url, client=S3Hook(aws_conn_id=S3_CONN_ID).get_conn())
    return pipeline.landing_store(current)


@contextmanager
def run_lock(current: Settings) -> Iterator[None]:
    """The warehouse's run lock (the CLI's too) for the running task, named as its holder."""
    from airflow.sdk import get_current_context

    from loaders.runlock import run_lock as lock

    ti = get_current_context()["ti"]
    with lock(current, f"Airflow task {ti.dag_id}.{ti.task_id}, run {ti.run_id}"):
        yield


def task(**kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """Airflow's ``@task(**kwargs)`` for a step of the pipeline, through :func:`fail_fast`."""
    from airflow.sdk import task as airflow_task

    def decorate(function: Callable[..., Any]) -> Any:
        return airflow_task(**kwargs)(fail_fast(function))

    return decorate


def fail_fast(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` as a task: a terminal error (:class:`loaders.errors.TerminalError`: bad
    configuration or data, a failed build, no green build) fails the task at once, without a
    retry; a transient one (an outage, a lock held) or any other error keeps the task's retries,
    with exponential backoff (the DAG's ``default_args``)."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except TerminalError as exc:
            from airflow.sdk.exceptions import AirflowFailException

            step = exc.step or function.__name__
            raise AirflowFailException(
                f"{type(exc).__name__} during {step} (not retried): {one_line(exc)}"
            ) from exc

    return run


def as_list(values: Any) -> list[Any]:
    """The outputs of a mapped task as a list, indexed up to its length (iterating Airflow's lazy
    sequence to its end logs a spurious "XCom not found" error)."""
    return [] if values is None else [values[i] for i in range(len(values))]


def run_id(dag_run: Any) -> str:
    """This DAG run's id for the pipeline: sortable (UTC time first) and the same in every task
    and retry."""
    when = dag_run.run_after or dag_run.logical_date or datetime.now()
    suffix = hashlib.sha256(dag_run.run_id.encode()).hexdigest()[:6]
    return f"{when:%Y%m%dT%H%M%SZ}-{suffix}"


def reset_peak_rss(context: Any) -> None:
    """``on_execute_callback``: the task's peak RSS counts from here (one process may run several
    tasks, as ``dag.test()`` does; see :mod:`loaders.peak_memory`)."""
    peak_memory.reset()


def log_peak_rss(context: Any) -> None:
    """``on_success_callback``: the task's peak RSS in its log."""
    log.info("peak RSS of this task: %s", peak_memory.format_bytes(peak_memory.peak_bytes()))


# -- the dbt task group --------------------------------------------------------------------------
def project_config(config: DagConfig) -> ProjectConfig:
    env = {"MUSIC_ELT_TARGET": config.target, "DBT_SEND_ANONYMOUS_USAGE_STATS": "False"}
    if config.target == "duckdb":  # the file and its memory settings; no secret (serialized)
        env.update(config.settings.warehouse.dbt_env())
    return ProjectConfig(
        dbt_project_path=config.settings.dbt_project_dir,
        manifest_path=config.manifest,
        install_dbt_deps=False,
        env_vars=env,
    )


def profile_config(config: DagConfig) -> ProfileConfig:
    """duckdb: the project's profiles.yml (it reads MUSIC_ELT_DUCKDB_*); postgres, redshift: a
    profile built from the target's connection (``postgres_conn``, ``redshift_conn``) when a
    task runs; dbt's default schema is ``WAREHOUSE_SCHEMA`` (default ``public``)."""
    mappings = {
        "postgres": PostgresUserPasswordProfileMapping,
        "redshift": RedshiftUserPasswordProfileMapping,
    }
    if config.target in mappings:
        return ProfileConfig(
            profile_name="music_elt",
            target_name=config.target,
            profile_mapping=mappings[config.target](
                conn_id=WAREHOUSE_CONN_IDS[config.target],
                profile_args={"schema": os.environ.get("WAREHOUSE_SCHEMA", "public"), "threads": 4},
            ),
        )
    return ProfileConfig(
        profile_name="music_elt",
        target_name=config.target,
        profiles_yml_filepath=config.settings.dbt_project_dir / "profiles.yml",
    )


def execution_config(config: DagConfig) -> ExecutionConfig:
    execution_mode, invocation_mode, _ = COSMOS_MODES[config.cosmos_mode]
    return ExecutionConfig(execution_mode=execution_mode, invocation_mode=invocation_mode)


def render_config(config: DagConfig) -> RenderConfig:
    execution_mode, _, test_behavior = COSMOS_MODES[config.cosmos_mode]
    return RenderConfig(
        load_method=LoadMode.DBT_MANIFEST,
        test_behavior=test_behavior,
        # local mode: a test of two models runs once, after both (the watcher build runs it)
        should_detach_multiple_parents_tests=execution_mode == ExecutionMode.LOCAL,
        source_rendering_behavior=SourceRenderingBehavior.NONE,
        emit_datasets=False,
        enable_mock_profile=False,
    )


def dbt_task_group(config: DagConfig) -> Any:
    """The Cosmos task group of the dbt project: the watcher producer runs one ``dbt build``
    (the CLI's command), a task per model and one per model's tests report its result;
    failures are recorded for the alert."""
    from cosmos import DbtTaskGroup

    from music_elt_airflow.alerts import record_dbt_results

    group = DbtTaskGroup(
        group_id="dbt",
        project_config=project_config(config),
        profile_config=profile_config(config),
        execution_config=execution_config(config),
        render_config=render_config(config),
        operator_args={
            "pool": config.warehouse_pool,
            "append_env": True,
            "emit_datasets": False,
            "callback": record_dbt_results,
        },
    )
    if config.cosmos_mode.startswith("watcher"):
        wire_watchers(config, group)
    else:  # a failing data test is not transient: it never retries
        for task in group.iter_tasks():
            if type(task).__name__.startswith(("DbtTest", "DbtSource")):
                task.retries = 0
    return group


def wire_watchers(config: DagConfig, group: Any) -> None:
    """Make Cosmos's watcher tasks honest under retries and clears:

    - the producer runs the pipeline's build step (:func:`loaders.pipeline.build`: under the
      run lock, ``dbt build``, then the green build recorded for this DAG run) on every try.
      Cosmos skips every try after the first, which turned a cleared failed run green without
      building; a build is safe to repeat, so a clear builds again;
    - a model or test task reports the producer's last build, also on a retry or a clear. It
      never falls back to running dbt for its model alone (no tests, outside the build, a
      second build record); when the producer has no result for it, it fails saying what to do;
    - the producer is upstream of every model sensor (under ``airflow dags test`` a sensor that
      starts first would block it), and the sensors read its results without holding a worker
      for long; the producer and the sensors time out after the build timeout;
    - the sensors only read XCom: they stay out of the DuckDB pool and report side by side, while
      archive and publish (downstream of the producer alone, :func:`build_task`) go on.
    """
    from cosmos.operators.watcher import DbtProducerWatcherOperator

    tasks = list(group.iter_tasks())
    producer = next(t for t in tasks if isinstance(t, DbtProducerWatcherOperator))
    producer.retries = 0  # a failed build fails the run; a clear builds again
    producer.execution_timeout = config.build_timeout
    producer.execute = _building(config, producer.execute)
    producer.dbt_cmd_flags = [*producer.dbt_cmd_flags, *build_flags(config.settings)]
    for task in tasks:
        if task is producer or not hasattr(task, "producer_task_id"):
            continue
        task.retries = 0
        task.deferrable = False
        task.poke_interval = 1
        task.timeout = config.build_timeout_seconds
        task.execution_timeout = config.build_timeout
        task.pool = "default_pool"  # it reads XCom only, never the warehouse
        task._handle_retry = _report_last_build
        task._fallback_to_non_watcher_run = _no_build_alone(task.task_id, producer.task_id)
        if not task.upstream_task_ids & {t.task_id for t in tasks}:  # a root of the dbt graph
            producer >> task
    for task in tasks:
        if getattr(task, "is_test_sensor", False):
            _fold_into_model_task(task)
    for task in group.iter_tasks():
        if hasattr(task, "producer_task_id"):
            task._get_node_status = _reported_by_the_build(config, task, task._get_node_status)


def _fold_into_model_task(tests: Any) -> None:
    """Report a model's tests in its model's task: the tests' task (Cosmos's ``.test`` sensor of
    the model) leaves the DAG, its downstream tasks follow the model's task, and the model's
    task succeeds once the build reported the model and then its tests (a failed test fails
    it). Each task costs a worker process that parses the DAG file: half as many report faster."""
    dag = tests.dag
    (model_id,) = tests.upstream_task_ids  # the model's task, right before its tests'
    model = dag.task_dict[model_id]
    for task_id in list(tests.downstream_task_ids):
        after = dag.task_dict[task_id]
        after.upstream_task_ids.discard(tests.task_id)
        model >> after
    model.downstream_task_ids.discard(tests.task_id)
    dag._remove_task(tests.task_id)
    model._get_node_status = _model_then_tests(model, model._get_node_status)


def _model_then_tests(task: Any, model_status: Any) -> Any:
    """The status a model task reports: its model's, then, once the model succeeded, its tests'
    (Cosmos's aggregate of the model's tests; none yet: the task keeps waiting)."""
    from cosmos.operators._watcher.aggregation import get_tests_status_xcom_key
    from cosmos.operators._watcher.state import get_xcom_val, is_dbt_node_status_success

    def model_then_tests(ti: Any, context: Any) -> Any:
        status = model_status(ti, context)
        if not is_dbt_node_status_success(status):
            return status
        key = get_tests_status_xcom_key(task.model_unique_id)
        return get_xcom_val(ti, task.producer_task_id, key)

    return model_then_tests


def _reported_by_the_build(config: DagConfig, task: Any, node_status: Any) -> Any:
    """The status a model task reports, failing once the build ended without it. Cosmos keeps
    waiting (until the build timeout) for a node the build never ran, as when the DAG's dbt
    manifest is not the project's: a test it lists does not exist any more."""

    def reported(ti: Any, context: Any) -> Any:
        status = node_status(ti, context)
        if status is None and task._get_producer_task_status(context) == "success":
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"the dbt build of {task.producer_task_id} ended without a result for "
                f"{task.model_unique_id} or one of its tests: the DAG's dbt manifest "
                f"({config.manifest}) is not the project's; parse it again (`make manifest "
                f"DBT_TARGET={config.target}`, or deploy a new bundle), then clear the run"
            )
        return status

    return reported


def build_task(group: Any) -> Any:
    """What archive and publish wait for: the watcher producer of the dbt task group (it runs
    ``dbt build`` and records the green build; the model tasks only report it), or the whole
    group in the other Cosmos modes, where the model tasks build."""
    from cosmos.operators.watcher import DbtProducerWatcherOperator

    producers = (t for t in group.iter_tasks() if isinstance(t, DbtProducerWatcherOperator))
    return next(producers, group)


def _building(config: DagConfig, cosmos_execute: Any) -> Any:
    """The producer's execute: Cosmos's ``dbt build`` inside the pipeline's build step, stopped
    as Ctrl-C stops it shortly before the task's execution timeout. Airflow's own timeout
    raises an exception dbt does not handle: its threads stay blocked in their queries (a table
    lock, a stuck warehouse) and the task process cannot end. Ctrl-C makes dbt cancel its
    queries on the warehouse and return."""

    def execute(context: Any, **kwargs: Any) -> Any:
        from airflow.sdk.exceptions import AirflowException

        from loaders import pipeline

        current = settings(config)
        first_try = {**context, "ti": _FirstTry(context["ti"])}
        first_try["task_instance"] = first_try["ti"]
        timeout = config.build_timeout_seconds
        fired = threading.Event()
        stop = threading.Timer(max(1.0, timeout - min(10.0, timeout / 10)), _interrupt, [fired])
        stop.daemon = True
        # the task runner leaves SIGINT at the system default (the process would just die)
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with run_lock(current):
                stop.start()
                return pipeline.build(
                    current,
                    run_id(context["dag_run"]),
                    runner=lambda: cosmos_execute(first_try, **kwargs),
                )
        except BaseException:
            if fired.is_set():
                raise AirflowException(
                    f"the dbt build timed out (MUSIC_ELT_BUILD_TIMEOUT_SECONDS="
                    f"{timeout:g}): its queries were cancelled, nothing is recorded, archived or "
                    "published; find what blocked it (locks, warehouse load), then clear the run"
                ) from None
            raise
        finally:
            stop.cancel()
            signal.signal(signal.SIGINT, previous)

    return execute


def _interrupt(fired: threading.Event) -> None:
    """Ctrl-C to this process (the task's): dbt cancels its warehouse queries and stops."""
    fired.set()
    os.kill(os.getpid(), signal.SIGINT)


class _FirstTry:
    """A task instance that Cosmos's producer takes for a first try (it skips any other)."""

    try_number = 1

    def __init__(self, ti: Any) -> None:
        object.__setattr__(self, "_ti", ti)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ti, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._ti, name, value)


def _report_last_build(try_number: int, producer_task_state: str | None, context: Any) -> None:
    """On a retry or a clear, keep reading the producer's result (never rebuild alone)."""
    return None


def _no_build_alone(task_id: str, producer_id: str) -> Any:
    def fail(try_number: int, context: Any) -> bool:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(
            f"{task_id} reports the dbt build of {producer_id}, which has no result for it in "
            f"this run: clear {producer_id} with its downstream tasks (or the whole run) to "
            "build again; a model is never rebuilt alone, without its tests and the publish"
        )

    return fail
