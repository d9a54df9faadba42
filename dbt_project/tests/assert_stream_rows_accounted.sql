-- Row accounting: every raw stream row is staged once, and every staged row is either a
-- rejected row or a copy of a kept play:
--     raw rows = staged rows = rejected rows + kept plays + duplicate copies
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
        rejected_rows.record_count as rejected_row_count,
        kept_rows.play_count as kept_play_count,
        kept_rows.record_count - kept_rows.play_count as duplicate_row_count
    from raw_rows
    cross join staged_rows
    cross join rejected_rows
    cross join kept_rows

)

select *
from accounting
where
    raw_row_count <> staged_row_count
    or raw_row_count <> rejected_row_count + kept_play_count + duplicate_row_count
