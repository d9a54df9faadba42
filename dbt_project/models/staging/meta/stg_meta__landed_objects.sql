with

source as (

    select
        object_key,
        etag,
        size_bytes,
        target_table,
        row_count,
        status,
        reason,
        load_id,
        loaded_at,
        superseded_at,
        load_seq,
        superseded_seq
    from {{ source('meta', 'load_ledger') }}

),

final as (

    select
        object_key,
        etag,
        size_bytes,
        target_table,
        row_count,
        status as load_status,
        reason as reject_reason,
        load_id,
        loaded_at,
        superseded_at,
        load_seq,
        superseded_seq,
        superseded_seq is not null as is_superseded,
        -- the version of its key that counts: loaded, not superseded (the loaders' own test,
        -- before dbt runs, is loaders/warehouse/ledger.py CURRENT_VERSION)
        (status = 'loaded' and superseded_seq is null) as is_current,
        target_table = {{ raw_table_name('streams', 'streams') }} as is_stream_file
    from source

)

select * from final
