{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='listen_date',
        on_schema_change='fail',
        dist='user_id',
        sort=['listen_date', 'listen_hour'],
    )
}}

/*
    One row per kept play: raw rows without a reject reason, exact duplicates
    (user_id, track_id, listen_time in UTC) collapsed into one play.
    Incremental: the dates touched by staged rows loaded at or after the latest load time
    already here are rebuilt whole from every staged row of those dates (delete+insert by
    listen_date), so late files for old dates and re-delivered files are absorbed and a re-run
    changes nothing.
*/

with

staged_listens as (

    select
        user_id,
        track_id,
        listen_time,
        cast(listen_time as date) as listen_date,
        _loaded_at
    from {{ ref('stg_streams__listens') }}
    where reject_reason is null

),

{% if is_incremental() %}

    touched_dates as (

        select distinct listen_date
        from staged_listens
        where
            _loaded_at >= (
                select coalesce(max(existing_listens.last_loaded_at), cast('1900-01-01' as timestamp))
                from {{ this }} as existing_listens
            )

    ),

{% endif %}

listens_in_scope as (

    select
        user_id,
        track_id,
        listen_time,
        listen_date,
        _loaded_at
    from staged_listens
    {% if is_incremental() %}
        where listen_date in (select touched_dates.listen_date from touched_dates)
    {% endif %}

),

plays as (

    select
        user_id,
        track_id,
        listen_time,
        listen_date,
        count(*) as raw_row_count,
        min(_loaded_at) as first_loaded_at,
        max(_loaded_at) as last_loaded_at
    from listens_in_scope
    group by
        user_id,
        track_id,
        listen_time,
        listen_date

),

final as (

    select
        listen_time,
        listen_date,
        {{ dbt.date_trunc('hour', 'listen_time') }} as listen_hour,
        user_id,
        track_id,
        raw_row_count,
        first_loaded_at,
        last_loaded_at
    from plays

)

select * from final
