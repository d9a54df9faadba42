{{
    config(
        dist='even',
        sort='loaded_at',
    )
}}

/*
    One row per rejected raw stream row, with its file, line (null where the warehouse cannot
    record it, i.e. Redshift), load and reason. Rebuilt each run from the typed staging table
    (a filter, no parsing). Files rejected whole by the loader are in the load ledger instead.
*/

with

staged_listens as (

    select
        reject_reason,
        raw_user_id,
        raw_track_id,
        raw_listen_time,
        _source_file,
        _line_number,
        _loaded_at,
        _load_id
    from {{ ref('stg_streams__listens') }}
    where reject_reason is not null

),

final as (

    select
        _source_file as source_file,
        _line_number as line_number,
        reject_reason,
        raw_user_id,
        raw_track_id,
        raw_listen_time,
        _loaded_at as loaded_at,
        _load_id as load_id
    from staged_listens

)

select * from final
