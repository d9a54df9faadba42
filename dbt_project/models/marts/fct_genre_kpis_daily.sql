{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        dist='even',
        sort=['listen_date', 'track_genre'],
        pre_hook="{{ delete_stale_periods('listen_date') }}",
        schema='kpi_build',
        meta={'grain': ['listen_date', 'track_genre'], 'preview': {
            'latest': 'listen_date',
            'order_by': 'listen_count desc, track_genre',
            'columns': ['listen_date', 'track_genre', 'listen_count', 'unique_listeners', 'popularity_index', 'most_popular_track_name'],
        }},
    )
}}

/*
    One row per (listen_date, track_genre). Incremental: the pre-hook deletes the stale dates
    (int_listen_dates_stale: play count differs from fct_listens, missing here or gone there,
    or a play of a load newer than the last green build), then those dates are rebuilt.
*/

with

listens as (

    select
        listen_date,
        user_id,
        track_id
    from {{ ref('fct_listens') }}
    {{ only_stale_periods('listen_date') }}

),

tracks as (

    select
        track_id,
        track_name,
        track_genre,
        popularity,
        duration_ms
    from {{ ref('dim_tracks') }}

),

listens_with_tracks as (

    select
        listens.listen_date,
        listens.user_id,
        listens.track_id,
        coalesce(tracks.track_genre, 'unknown') as track_genre,
        tracks.track_name,
        tracks.popularity,
        tracks.duration_ms
    from listens
    left join tracks
        on listens.track_id = tracks.track_id

),

genre_totals as (

    select
        listen_date,
        track_genre,
        count(*) as listen_count,
        count(distinct user_id) as unique_listeners,
        -- play-weighted means from exact integer sums: identical on every warehouse and run
        cast(sum(duration_ms) as float8)
        / cast(nullif(count(duration_ms), 0) * 1000 as float8) as avg_track_duration_sec,
        cast(sum(popularity) as float8)
        / cast(nullif(count(popularity), 0) as float8) as avg_popularity
    from listens_with_tracks
    group by
        listen_date,
        track_genre

),

daily_totals as (

    select
        listen_date,
        sum(listen_count) as listen_count
    from genre_totals
    group by listen_date

),

track_plays as (

    select
        listen_date,
        track_genre,
        track_id,
        track_name,
        popularity,
        count(*) as listen_count
    from listens_with_tracks
    group by
        listen_date,
        track_genre,
        track_id,
        track_name,
        popularity

),

ranked_tracks as (

    select
        *,
        row_number() over (
            partition by listen_date, track_genre
            order by
                listen_count desc,
                popularity desc nulls last,
                {{ binary_text_order('track_id') }} asc
        ) as track_rank
    from track_plays

),

most_popular_tracks as (

    select
        listen_date,
        track_genre,
        track_id,
        track_name,
        listen_count
    from ranked_tracks
    where track_rank = 1

),

final as (

    select
        genre_totals.listen_date,
        genre_totals.track_genre,
        cast(genre_totals.listen_count as bigint) as listen_count,
        cast(genre_totals.unique_listeners as bigint) as unique_listeners,
        genre_totals.avg_track_duration_sec,
        genre_totals.avg_popularity,
        cast(genre_totals.listen_count as float8)
        / cast(daily_totals.listen_count as float8) as popularity_index,
        most_popular_tracks.track_id as most_popular_track_id,
        most_popular_tracks.track_name as most_popular_track_name,
        cast(most_popular_tracks.listen_count as bigint) as most_popular_track_plays
    from genre_totals
    inner join daily_totals
        on genre_totals.listen_date = daily_totals.listen_date
    inner join most_popular_tracks
        on
            genre_totals.listen_date = most_popular_tracks.listen_date
            and genre_totals.track_genre = most_popular_tracks.track_genre

)

select * from final
