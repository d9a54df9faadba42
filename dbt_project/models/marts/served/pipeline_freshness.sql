{{
    config(
        materialized='view',
        grants=reader_grants(),
    )
}}

/*
    How fresh the KPIs are, in one row: the newest play in the marts, the newest file loaded,
    the last green build and the last publish, each with its age in seconds at checked_at
    (the moment this view is read; on DuckDB, the moment the serving copy was published).
*/

with

listens as (

    select listen_time
    from {{ ref('fct_listens') }}

),

landed_objects as (

    select loaded_at
    from {{ ref('stg_meta__landed_objects') }}
    where load_status = 'loaded'

),

builds as (

    select
        finished_at,
        published_at
    from {{ source('meta', 'dbt_builds') }}

),

latest as (

    select
        (select max(listen_time) from listens) as newest_listen_time,
        (select max(loaded_at) from landed_objects) as newest_loaded_at,
        (select max(finished_at) from builds) as last_green_build_at,
        (select max(published_at) from builds) as last_published_at,
        {{ dbt.current_timestamp_in_utc_backcompat() }} as checked_at

),

final as (

    select
        newest_listen_time,
        newest_loaded_at,
        last_green_build_at,
        last_published_at,
        checked_at,
        {{ dbt.datediff('newest_listen_time', 'checked_at', 'second') }} as newest_listen_age_sec,  -- noqa: LT05
        {{ dbt.datediff('last_green_build_at', 'checked_at', 'second') }} as last_green_build_age_sec,  -- noqa: LT05
        {{ dbt.datediff('last_published_at', 'checked_at', 'second') }} as last_published_age_sec  -- noqa: LT05
    from latest

)

select * from final
