-- The load ledger and the raw table agree: the row_count of the stream files recorded as
-- loaded adds up to the rows in raw_streams.streams.
with

ledger as (

    select row_count
    from {{ ref('stg_meta__landed_objects') }}
    where
        load_status = 'loaded'
        and is_stream_file

),

raw_rows as (

    select count(*) as record_count
    from {{ source('streams', 'streams') }}

),

ledger_rows as (

    select coalesce(sum(row_count), 0) as record_count
    from ledger

),

compared as (

    select
        ledger_rows.record_count as ledger_row_count,
        raw_rows.record_count as raw_row_count
    from ledger_rows
    cross join raw_rows

)

select *
from compared
where ledger_row_count <> raw_row_count
