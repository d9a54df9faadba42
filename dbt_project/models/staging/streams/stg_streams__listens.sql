{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='_load_seq',
        on_schema_change='fail',
        dist='even',
        sort='_load_seq',
    )
}}

/*
    One row per raw stream row, typed, with the reason it is rejected (null when kept).
    Parsing is the expensive step, so it runs once per raw row: incremental on the ledger's load
    sequence, never on a clock. Each run takes the raw rows whose load sequence number is above
    the largest already staged: numbers are assigned in commit order under the ledger's lock, so
    no row can appear later below it, and a re-run with nothing new stages nothing.
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
        _load_id,
        _load_seq
    from {{ source('streams', 'streams') }}
    {% if is_incremental() %}
        where
            _load_seq > (
                select coalesce(max(staged._load_seq), 0)
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
        _load_id,
        _load_seq
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
        _load_id,
        _load_seq
    from classified

)

select * from final
