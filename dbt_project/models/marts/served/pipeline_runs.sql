{{
    config(
        materialized='view',
        grants=reader_grants(),
    )
}}

/*
    One row per pipeline run (load id) that loaded a file or recorded a green build: what it
    loaded, quarantined and superseded, its stream rows in, kept and rejected, how long its
    load and dbt build took, and whether its build is green and published. Built from the load
    ledger and the log of green builds (raw_meta.dbt_builds): a run whose build failed has no
    row there, so its build_status is 'not green'.
*/

with

landed_objects as (

    select
        object_key,
        is_stream_file,
        row_count,
        load_status,
        load_id,
        loaded_at,
        load_seq,
        superseded_seq
    from {{ ref('stg_meta__landed_objects') }}

),

builds as (

    select
        load_id,
        started_at,
        finished_at,
        published_at
    from {{ source('meta', 'dbt_builds') }}

),

rejected_listens as (

    select load_id
    from {{ ref('fct_rejected_listens') }}

),

loads as (

    select
        load_id,
        min(loaded_at) as first_loaded_at,
        max(loaded_at) as last_loaded_at,
        sum(case when is_stream_file and load_status = 'loaded' then 1 else 0 end) as files_loaded,
        sum(
            case when not is_stream_file and load_status = 'loaded' then 1 else 0 end
        ) as snapshots_loaded,
        sum(case when load_status = 'rejected' then 1 else 0 end) as files_quarantined,
        sum(
            case when is_stream_file and load_status = 'loaded' then row_count else 0 end
        ) as rows_in
    from landed_objects
    group by load_id

),

superseded as (

    select
        later.load_id,
        count(*) as files_superseded
    from landed_objects as earlier
    inner join landed_objects as later
        on earlier.superseded_seq = later.load_seq
    group by later.load_id

),

rejected as (

    select
        load_id,
        count(*) as rows_rejected
    from rejected_listens
    group by load_id

),

runs as (

    select load_id from loads
    union all
    select builds.load_id from builds
    where builds.load_id not in (select loads.load_id from loads)

),

final as (

    select
        runs.load_id,
        coalesce(loads.first_loaded_at, builds.started_at) as run_started_at,
        coalesce(loads.files_loaded, 0) as files_loaded,
        coalesce(loads.snapshots_loaded, 0) as snapshots_loaded,
        coalesce(loads.files_quarantined, 0) as files_quarantined,
        coalesce(superseded.files_superseded, 0) as files_superseded,
        coalesce(loads.rows_in, 0) as rows_in,
        coalesce(loads.rows_in, 0) - coalesce(rejected.rows_rejected, 0) as rows_kept,
        coalesce(rejected.rows_rejected, 0) as rows_rejected,
        {{ dbt.datediff('loads.first_loaded_at', 'loads.last_loaded_at', 'second') }} as load_sec,  -- noqa: LT05
        {{ dbt.datediff('builds.started_at', 'builds.finished_at', 'second') }} as build_sec,  -- noqa: LT05
        {{ dbt.datediff('builds.finished_at', 'builds.published_at', 'second') }} as build_to_publish_sec,  -- noqa: LT05
        builds.started_at as build_started_at,
        builds.finished_at as build_finished_at,
        builds.published_at,
        case when builds.load_id is null then 'not green' else 'green' end as build_status,
        case
            when builds.load_id is null then 'not built'
            when builds.published_at is null then 'pending'
            else 'published'
        end as publish_status
    from runs
    left join loads
        on runs.load_id = loads.load_id
    left join builds
        on runs.load_id = builds.load_id
    left join superseded
        on runs.load_id = superseded.load_id
    left join rejected
        on runs.load_id = rejected.load_id

)

select * from final
