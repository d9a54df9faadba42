-- Rank 1 of fct_top_artists_hourly is the hour's top_artist (and its plays); an hour without
-- credited artists has no ranked rows and a null top_artist. Ranks of an hour are 1..n.
with

hourly_kpis as (

    select
        listen_hour,
        top_artist,
        top_artist_plays
    from {{ ref('fct_listening_kpis_hourly') }}

),

top_artists as (

    select
        listen_hour,
        artist_rank,
        artist_name,
        listen_count
    from {{ ref('fct_top_artists_hourly') }}

),

rank_one as (

    select
        listen_hour,
        artist_name,
        listen_count
    from top_artists
    where artist_rank = 1

),

rank_gaps as (

    select
        listen_hour,
        'ranks are not 1..n' as problem
    from top_artists
    group by listen_hour
    having max(artist_rank) <> count(*) or min(artist_rank) <> 1

),

mismatches as (

    select
        coalesce(hourly_kpis.listen_hour, rank_one.listen_hour) as listen_hour,
        'top_artist differs from rank 1' as problem
    from hourly_kpis
    full outer join rank_one
        on hourly_kpis.listen_hour = rank_one.listen_hour
    where
        hourly_kpis.listen_hour is null
        or (rank_one.listen_hour is null and hourly_kpis.top_artist is not null)
        or hourly_kpis.top_artist <> rank_one.artist_name
        or hourly_kpis.top_artist_plays <> rank_one.listen_count
        or (rank_one.listen_hour is not null and hourly_kpis.top_artist is null)

),

final as (

    select * from rank_gaps
    union all
    select * from mismatches

)

select * from final
