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
        superseded_seq is not null as is_superseded
    from source

)

select * from final
