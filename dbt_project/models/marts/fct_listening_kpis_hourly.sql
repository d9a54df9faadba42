{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        dist='even',
        sort='listen_hour',
        pre_hook="{{ delete_stale_periods('listen_hour') }}",
        schema='kpi_build',
        meta={'grain': ['listen_hour'], 'preview': {
            'order_by': 'listen_count desc, listen_hour',
            'columns': ['listen_hour', 'listen_count', 'unique_listeners', 'track_diversity_index', 'top_artist', 'top_artist_plays'],
        }},
    )
}}

/*
    One row per listen_hour (UTC timestamp truncated to the hour). Incremental: the pre-hook
    deletes the stale hours (int_listen_hours_stale), then those hours are rebuilt. top_artist
    is rank 1 of fct_top_artists_hourly.
*/

with

listens as (

    select
        listen_hour,
        user_id,
        track_id
    from {{ ref('fct_listens') }}
    {{ only_stale_periods('listen_hour') }}

),

top_artists as (

    select
        listen_hour,
        artist_name,
        listen_count
    from {{ ref('fct_top_artists_hourly') }}
    where artist_rank = 1

),

hourly_totals as (

    select
        listen_hour,
        count(*) as listen_count,
        count(distinct user_id) as unique_listeners,
        count(distinct track_id) as distinct_tracks
    from listens
    group by listen_hour

),

final as (

    select
        hourly_totals.listen_hour,
        cast(hourly_totals.listen_hour as date) as listen_date,
        cast(extract(hour from hourly_totals.listen_hour) as integer) as hour_of_day,
        cast(hourly_totals.listen_count as bigint) as listen_count,
        cast(hourly_totals.unique_listeners as bigint) as unique_listeners,
        cast(hourly_totals.distinct_tracks as bigint) as distinct_tracks,
        cast(hourly_totals.distinct_tracks as float8)
        / cast(hourly_totals.listen_count as float8) as track_diversity_index,
        top_artists.artist_name as top_artist,
        cast(top_artists.listen_count as bigint) as top_artist_plays
    from hourly_totals
    left join top_artists
        on hourly_totals.listen_hour = top_artists.listen_hour

)

select * from final
