{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='listen_date',
        on_schema_change='fail',
        dist='user_id',
        sort=['listen_date', 'listen_hour'],
        pre_hook="{% if is_incremental() %}delete from {{ this }} where listen_date in ({{ listens_touched_dates() }}){% endif %}",
    )
}}

/*
    One row per kept play: raw rows without a reject reason, of the current version of their
    file (a key delivered again with other content is a correction: only its latest version
    counts), exact duplicates (user_id, track_id, listen_time in UTC) collapsed into one play.
    Incremental: the dates touched by staged rows loaded since the last green dbt build started,
    and the dates of rows whose file version was superseded since, are rebuilt
    whole from the current rows of those dates (delete+insert by listen_date), so late files,
    re-delivered copies and corrections are absorbed and a re-run changes nothing.
*/

-- depends_on: {{ source('meta', 'dbt_builds') }}

with

staged_listens as (

    select
        user_id,
        track_id,
        listen_time,
        cast(listen_time as date) as listen_date,
        _source_file,
        _loaded_at
    from {{ ref('stg_streams__listens') }}
    where reject_reason is null

),

file_versions as (

    select
        object_key,
        loaded_at,
        superseded_at
    from {{ ref('stg_meta__landed_objects') }}
    where
        load_status = 'loaded'
        and target_table = 'raw_streams.streams'

),

versioned_listens as (

    select
        staged_listens.user_id,
        staged_listens.track_id,
        staged_listens.listen_time,
        staged_listens.listen_date,
        staged_listens._loaded_at,
        file_versions.superseded_at
    from staged_listens
    left join file_versions
        on
            staged_listens._source_file = file_versions.object_key
            and staged_listens._loaded_at = file_versions.loaded_at

),

{% if is_incremental() %}

    touched_dates as (

        {{ listens_touched_dates() }}

    ),

{% endif %}

listens_in_scope as (

    select
        user_id,
        track_id,
        listen_time,
        listen_date,
        _loaded_at
    from versioned_listens
    where
        superseded_at is null
        {% if is_incremental() %}
            and listen_date in (select touched_dates.listen_date from touched_dates)
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
