-- Row accounting: every raw stream row is staged once, and every staged row is a row of a
-- superseded file version (kept in raw for audit, counted nowhere), a rejected row, or a copy
-- of a kept play:
--     raw rows = staged rows = superseded rows + rejected rows + kept plays + duplicate copies
-- where kept plays + duplicate copies = sum(raw_row_count) of fct_listens.
with

raw_rows as (

    select count(*) as record_count
    from {{ source('streams', 'streams') }}

),

staged_rows as (

    select count(*) as record_count
    from {{ ref('stg_streams__listens') }}

),

superseded_rows as (

    select count(*) as record_count
    from {{ ref('stg_streams__listens') }} as staged
    inner join {{ ref('stg_meta__landed_objects') }} as file_versions
        on
            staged._source_file = file_versions.object_key
            and staged._load_seq = file_versions.load_seq
    where
        file_versions.is_superseded
        and file_versions.load_status = 'loaded'

),

rejected_rows as (

    select count(*) as record_count
    from {{ ref('fct_rejected_listens') }}

),

kept_rows as (

    select
        count(*) as play_count,
        coalesce(sum(raw_row_count), 0) as record_count
    from {{ ref('fct_listens') }}

),

accounting as (

    select
        raw_rows.record_count as raw_row_count,
        staged_rows.record_count as staged_row_count,
        superseded_rows.record_count as superseded_row_count,
        rejected_rows.record_count as rejected_row_count,
        kept_rows.play_count as kept_play_count,
        kept_rows.record_count - kept_rows.play_count as duplicate_row_count
    from raw_rows
    cross join staged_rows
    cross join superseded_rows
    cross join rejected_rows
    cross join kept_rows

)

select *
from accounting
where
    raw_row_count <> staged_row_count
    or raw_row_count
    <> superseded_row_count + rejected_row_count + kept_play_count + duplicate_row_count
