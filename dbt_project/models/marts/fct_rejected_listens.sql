{{
    config(
        dist='even',
        sort='loaded_at',
    )
}}

/*
    One row per rejected raw stream row of the current version of its file (a superseded
    version's rows count nowhere), with its file, line (null where the warehouse cannot
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
        _load_id,
        _load_seq
    from {{ ref('stg_streams__listens') }}
    where reject_reason is not null

),

superseded_versions as (

    select
        object_key,
        load_seq
    from {{ ref('stg_meta__landed_objects') }}
    where
        is_superseded
        and is_stream_file

),

current_rejects as (

    select
        staged_listens.reject_reason,
        staged_listens.raw_user_id,
        staged_listens.raw_track_id,
        staged_listens.raw_listen_time,
        staged_listens._source_file,
        staged_listens._line_number,
        staged_listens._loaded_at,
        staged_listens._load_id
    from staged_listens
    left join superseded_versions
        on
            staged_listens._source_file = superseded_versions.object_key
            and staged_listens._load_seq = superseded_versions.load_seq
    where superseded_versions.object_key is null

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
    from current_rejects

)

select * from final
