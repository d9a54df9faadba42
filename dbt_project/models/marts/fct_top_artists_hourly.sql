{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        dist='even',
        sort=['listen_hour', 'artist_rank'],
        pre_hook="{{ delete_stale_periods('listen_hour') }}",
        schema='kpi_build',
        meta={'grain': ['listen_hour', 'artist_rank'], 'preview': {'latest': 'listen_hour', 'order_by': 'artist_rank'}},
    )
}}

/*
    The top 5 credited artists of each hour (known tracks only); ties: smaller name in byte
    order. fct_listening_kpis_hourly takes its top_artist from rank 1 here, so this model is
    built first. Incremental: the pre-hook deletes the stale hours (int_listen_hours_stale,
    the same hours fct_listening_kpis_hourly recomputes), then those hours are rebuilt.
*/

with

listens as (

    select
        listen_hour,
        track_id
    from {{ ref('fct_listens') }}
    {{ only_stale_periods('listen_hour') }}

),

artist_credits as (

    select
        track_id,
        artist_name
    from {{ ref('int_artist_credits_split') }}

),

artist_listens as (

    select
        listens.listen_hour,
        artist_credits.artist_name,
        count(*) as listen_count
    from listens
    inner join artist_credits
        on listens.track_id = artist_credits.track_id
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
