{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        dist='even',
        sort=['listen_hour', 'artist_rank'],
        pre_hook="{{ delete_stale_periods('listen_hour', sibling_relation('fct_listening_kpis_hourly') if is_incremental() else none) }}",
        schema='kpi_build',
        meta={'grain': ['listen_hour', 'artist_rank'], 'preview': {'latest': 'listen_hour', 'order_by': 'artist_rank'}},
    )
}}

-- depends_on: {{ source('meta', 'dbt_builds') }}
-- depends_on: {{ source('meta', 'load_ledger') }}

/*
    The top 5 credited artists of each hour (known tracks only); ties: smaller name in byte
    order. fct_listening_kpis_hourly takes its top_artist from rank 1 here, so this model is
    built first. This table has no per-hour total to compare with fct_listens, so its stale
    hours are read from fct_listening_kpis_hourly, which is still one step behind when this model
    runs: an hour whose play count in fct_listens differs from that table's listen_count (or is
    missing there) is recomputed here, and then there, in the same run. That table is read
    through sibling_relation (adapter.get_relation), not ref(), because a ref would be a cycle; if it does not exist
    every hour is recomputed.
*/

{%- set hourly_kpis_relation = none -%}
{%- if is_incremental() -%}
    {%- set hourly_kpis_relation = sibling_relation('fct_listening_kpis_hourly') -%}
{%- endif %}

with

listens as (

    select
        listen_hour,
        track_id
    from {{ ref('fct_listens') }}

),

artist_credits as (

    select
        track_id,
        artist_name
    from {{ ref('int_artist_credits_split') }}

),

{% if is_incremental() %}

    stale_hours as (

        {{ stale_periods('listen_hour', ref('fct_listens'), hourly_kpis_relation) }}

    ),

{% endif %}

artist_listens as (

    select
        listens.listen_hour,
        artist_credits.artist_name,
        count(*) as listen_count
    from listens
    inner join artist_credits
        on listens.track_id = artist_credits.track_id
    {% if is_incremental() %}
        where listens.listen_hour in (select stale_hours.listen_hour from stale_hours)
    {% endif %}
    group by
        listens.listen_hour,
        artist_credits.artist_name

),

ranked_artists as (

    select
        *,
        row_number() over (
            partition by listen_hour
            order by
                listen_count desc,
                {{ binary_text_order('artist_name') }} asc
        ) as artist_rank
    from artist_listens

),

final as (

    select
        listen_hour,
        cast(artist_rank as integer) as artist_rank,
        artist_name,
        cast(listen_count as bigint) as listen_count
    from ranked_artists
    where artist_rank <= 5

)

select * from final
