{{
    config(
        materialized='view',
        grants=reader_grants(),
    )
}}

/*
    Every object version the loader landed or refused, from the load ledger: the files behind
    the data quality and pipeline pages.
*/

with

landed_objects as (

    select
        object_key,
        etag,
        size_bytes,
        target_table,
        row_count,
        load_status,
        reject_reason,
        load_id,
        loaded_at,
        superseded_at,
        load_seq,
        superseded_seq,
        is_superseded,
        is_current,
        is_stream_file
    from {{ ref('stg_meta__landed_objects') }}

),

final as (

    select
        object_key,
        etag,
        target_table,
        is_stream_file,
        load_status,
        reject_reason,
        row_count,
        size_bytes,
        load_id,
        loaded_at,
        load_seq,
        is_current,
        is_superseded,
        superseded_at,
        superseded_seq
    from landed_objects

)

select * from final
