{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        dist='user_id',
        sort=['listen_date', 'listen_hour'],
        pre_hook="{% if is_incremental() %}{{ delete_plays_to_recompute() }}{% endif %}",
    )
}}

/*
    One row per kept play: raw rows without a reject reason, of the current version of their
    file (a key delivered again with other content is a correction: only its latest version
    counts), exact duplicates (user_id, track_id, listen_time in UTC) collapsed into one play.
    Incremental by play: the plays of staged rows loaded since the last green dbt build started,
    and the plays of rows whose file version was superseded since, are deleted (pre-hook) and
    recomputed from all their current rows; a play left with none stays deleted. So a new day
    costs about its share of the data, late files, re-delivered copies and corrections are
    absorbed, and a re-run changes nothing.
*/

-- depends_on: {{ source('meta', 'dbt_builds') }}

with

staged_listens as (

    select
        user_id,
        track_id,
        listen_time,
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

{% if is_incremental() %}

    plays_to_recompute as (

        {{ plays_to_recompute() }}

    ),

{% endif %}

current_listens as (

    select
        staged_listens.user_id,
        staged_listens.track_id,
        staged_listens.listen_time,
        staged_listens._loaded_at
    from staged_listens
    {% if is_incremental() %}
        inner join plays_to_recompute
            on
                staged_listens.user_id = plays_to_recompute.user_id
                and staged_listens.track_id = plays_to_recompute.track_id
                and staged_listens.listen_time = plays_to_recompute.listen_time
    {% endif %}
    left join file_versions
        on
            staged_listens._source_file = file_versions.object_key
            and staged_listens._loaded_at = file_versions.loaded_at
    where file_versions.superseded_at is null

),

plays as (

    select
        user_id,
        track_id,
        listen_time,
        count(*) as raw_row_count,
        min(_loaded_at) as first_loaded_at,
        max(_loaded_at) as last_loaded_at
    from current_listens
    group by
        user_id,
        track_id,
        listen_time

),

final as (

    select
        listen_time,
        cast(listen_time as date) as listen_date,
        {{ dbt.date_trunc('hour', 'listen_time') }} as listen_hour,
        user_id,
        track_id,
        raw_row_count,
        first_loaded_at,
        last_loaded_at
    from plays

)

select * from final
