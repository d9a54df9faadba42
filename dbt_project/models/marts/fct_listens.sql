{{
    config(
        materialized='incremental',
        incremental_strategy='delete_insert_from_first_date',
        unique_key=['user_id', 'track_id', 'listen_time'],
        on_schema_change='fail',
        dist='user_id',
        sort=['listen_date', 'listen_hour'],
        post_hook="{% if is_incremental() %}delete from {{ this }} where raw_row_count = 0{% endif %}",
    )
}}

/*
    One row per kept play: raw rows without a reject reason, of the current version of their
    file (a key delivered again with other content is a correction: only its latest version
    counts), exact duplicates (user_id, track_id, listen_time in UTC) collapsed into one play.

    Incremental by play, so that a run costs about its new rows. Watermarks are the ledger's load
    sequence numbers, never clock times. Rows of a load numbered above the largest this table has
    consumed (max last_load_seq) are counted into their plays: a new play, or one already here
    whose count grows (delete+insert by play; the delete reads only dates on or after the first
    date the run writes: macros/listens_window.sql). A play with a row of a file version superseded by
    a load above that watermark (a correction) is recounted from all its current rows; one left
    with none is written with raw_row_count 0 and deleted by the post-hook. A failed build leaves
    this table as it was, so the next run counts the same rows again.
*/

{#-
    Staged rows are read as subqueries wherever needed: DuckDB materializes a CTE that is read
    more than once, which for all staged rows costs more than reading them again.
    kept_rows: every kept row with the load that superseded its file version (null: current).
    current_listens: the kept rows of current file versions.
-#}
{%- set kept_rows -%}
    select
        staged.user_id,
        staged.track_id,
        staged.listen_time,
        staged._load_seq,
        file_versions.superseded_seq
    from {{ ref('stg_streams__listens') }} as staged
    left join file_versions
        on
            staged._source_file = file_versions.object_key
            and staged._load_seq = file_versions.load_seq
    where staged.reject_reason is null
{%- endset %}
{%- set current_listens -%}
    select
        kept.user_id,
        kept.track_id,
        kept.listen_time,
        kept._load_seq
    from ({{ kept_rows }}) as kept
    where kept.superseded_seq is null
{%- endset %}

with

file_versions as (

    select
        object_key,
        load_seq,
        superseded_seq
    from {{ ref('stg_meta__landed_objects') }}
    where
        load_status = 'loaded'
        and is_stream_file

),

{% if is_incremental() %}

    consumed as (

        select coalesce(max(existing.last_load_seq), 0) as load_seq
        from {{ this }} as existing

    ),

    corrected_plays as (

        select distinct
            kept.user_id,
            kept.track_id,
            kept.listen_time
        from ({{ kept_rows }}) as kept
        where kept.superseded_seq > (select consumed.load_seq from consumed)

    ),

{% endif %}

rows_to_count as (

    -- a full build counts every current row; an incremental run the rows loaded above the
    -- watermark, added to the count of their play, and every current row of a corrected play,
    -- whose count starts again
    select
        current_listens.user_id,
        current_listens.track_id,
        current_listens.listen_time,
        current_listens._load_seq,
        false as is_recount
    from ({{ current_listens }}) as current_listens
    {% if is_incremental() %}
        where
            current_listens._load_seq > (select consumed.load_seq from consumed)
            and not exists (
                select 1
                from corrected_plays
                where
                    corrected_plays.user_id = current_listens.user_id
                    and corrected_plays.track_id = current_listens.track_id
                    and corrected_plays.listen_time = current_listens.listen_time
            )
        union all
        select
            current_listens.user_id,
            current_listens.track_id,
            current_listens.listen_time,
            current_listens._load_seq,
            true as is_recount
        from ({{ current_listens }}) as current_listens
        inner join corrected_plays
            on
                current_listens.user_id = corrected_plays.user_id
                and current_listens.track_id = corrected_plays.track_id
                and current_listens.listen_time = corrected_plays.listen_time
    {% endif %}

),

counted_plays as (

    select
        user_id,
        track_id,
        listen_time,
        is_recount,
        count(*) as raw_row_count,
        min(_load_seq) as first_load_seq,
        max(_load_seq) as last_load_seq
    from rows_to_count
    group by
        user_id,
        track_id,
        listen_time,
        is_recount

),

{% if is_incremental() %}

    plays as (

        -- a recounted play as counted; one already here grows (every row counted here was
        -- loaded before the new ones)
        select
            counted_plays.user_id,
            counted_plays.track_id,
            counted_plays.listen_time,
            case
                when counted_plays.is_recount then counted_plays.raw_row_count
                else counted_plays.raw_row_count + coalesce(existing.raw_row_count, 0)
            end as raw_row_count,
            case
                when counted_plays.is_recount then counted_plays.first_load_seq
                else coalesce(existing.first_load_seq, counted_plays.first_load_seq)
            end as first_load_seq,
            counted_plays.last_load_seq
        from counted_plays
        left join {{ this }} as existing
            on
                counted_plays.user_id = existing.user_id
                and counted_plays.track_id = existing.track_id
                and counted_plays.listen_time = existing.listen_time
        union all
        -- a corrected play left with no current row: written with 0 rows, deleted by the post-hook
        select
            corrected_plays.user_id,
            corrected_plays.track_id,
            corrected_plays.listen_time,
            0 as raw_row_count,
            cast(null as bigint) as first_load_seq,
            cast(null as bigint) as last_load_seq
        from corrected_plays
        where not exists (
            select 1
            from counted_plays
            where
                counted_plays.user_id = corrected_plays.user_id
                and counted_plays.track_id = corrected_plays.track_id
                and counted_plays.listen_time = corrected_plays.listen_time
        )

    ),

{% else %}

    plays as (

        select
            user_id,
            track_id,
            listen_time,
            raw_row_count,
            first_load_seq,
            last_load_seq
        from counted_plays

    ),

{% endif %}

final as (

    select
        listen_time,
        cast(listen_time as date) as listen_date,
        {{ dbt.date_trunc('hour', 'listen_time') }} as listen_hour,
        user_id,
        track_id,
        raw_row_count,
        first_load_seq,
        last_load_seq
    from plays

)

select * from final
