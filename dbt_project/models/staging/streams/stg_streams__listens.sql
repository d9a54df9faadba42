{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='_loaded_at',
        on_schema_change='fail',
        dist='even',
        sort='_loaded_at',
    )
}}

/*
    One row per raw stream row, typed, with the reason it is rejected (null when kept).
    Parsing is the expensive step, so it runs once per raw row: incremental on the load time.
    Each run takes the raw rows loaded at or after the latest load time already staged and
    replaces every staged row carrying one of those load times, so a re-run is idempotent and a
    file loaded with the same timestamp as the previous batch is not missed.
*/

with

source as (

    select
        user_id,
        track_id,
        listen_time,
        _source_file,
        _line_number,
        _loaded_at,
        _load_id
    from {{ source('streams', 'streams') }}
    {% if is_incremental() %}
        where
            _loaded_at >= (
                select coalesce(max(staged._loaded_at), cast('1900-01-01' as timestamp))
                from {{ this }} as staged
            )
    {% endif %}

),

cleaned as (

    select
        user_id as raw_user_id,
        track_id as raw_track_id,
        listen_time as raw_listen_time,
        {{ blank_to_null('user_id') }} as user_id_text,
        {{ blank_to_null('track_id') }} as track_id,
        {{ blank_to_null('listen_time') }} as listen_time_text,
        _source_file,
        _line_number,
        _loaded_at,
        _load_id
    from source

),

typed as (

    select
        *,
        {{ parse_bigint('user_id_text') }} as user_id,
        {{ parse_timestamp_utc('listen_time_text') }} as listen_time
    from cleaned

),

classified as (

    select
        *,
        case
            when user_id_text is null then 'missing_user_id'
            when track_id is null then 'missing_track_id'
            when user_id is null then 'invalid_user_id'
            when listen_time is null then 'invalid_listen_time'
            when listen_time > {{ dbt.dateadd('day', 1, '_loaded_at') }} then 'future_listen_time'
        end as reject_reason
    from typed

),

final as (

    -- the raw text is kept for rejected rows only: a kept row's typed values are its record
    select
        user_id,
        track_id,
        listen_time,
        reject_reason,
        case when reject_reason is not null then raw_user_id end as raw_user_id,
        case when reject_reason is not null then raw_track_id end as raw_track_id,
        case when reject_reason is not null then raw_listen_time end as raw_listen_time,
        _source_file,
        _line_number,
        _loaded_at,
        _load_id
    from classified

)

select * from final
