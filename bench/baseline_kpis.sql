-- The baseline of bench/scale_bench.py: the three KPI marts computed by one DuckDB script
-- straight from the CSV files, with no ledger, no tests and no history. Parameters (replaced by
-- the bench): {streams} a DuckDB list of the stream files, {songs} the songs.csv path.
-- It follows the contract's rules (ASCII trimming, the exact user_id and listen_time forms,
-- future plays, exact duplicates, songs unique by track_id, artist credits) closely enough to
-- produce the same marts on generated data; the product's dbt models are the reference.

create temp table plays as
with

raw as (
    select user_id, track_id, listen_time
    from read_csv({streams}, header = true, all_varchar = true, union_by_name = true)
),

trimmed as (
    select
        nullif(trim(user_id, chr(32) || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)), '')
            as user_id_text,
        nullif(trim(track_id, chr(32) || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)), '')
            as track_id,
        nullif(trim(listen_time, chr(32) || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)), '')
            as listen_time_text
    from raw
),

typed as (
    select
        case when regexp_full_match(user_id_text, '[+-]?[0-9]+')
            then try_cast(user_id_text as bigint) end as user_id,
        track_id,
        case
            when regexp_full_match(
                listen_time_text,
                '[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?'
                || '(Z|[+-][0-9]{2}(:?[0-9]{2})?)?'
            )
            then try_cast(try_cast(listen_time_text as timestamptz) at time zone 'UTC' as timestamp)
        end as listen_time
    from trimmed
)

select distinct user_id, track_id, listen_time
from typed
where
    user_id is not null
    and track_id is not null
    and listen_time is not null
    and listen_time <= now()::timestamp + interval 1 day;

create temp table tracks as
select track_id, track_name, track_genre, popularity, duration_ms, artists
from (
    select
        *,
        row_number() over (
            partition by track_id
            order by
                popularity desc nulls last,
                track_genre collate c nulls last,
                album_name collate c nulls last,
                track_name collate c nulls last,
                artists collate c nulls last,
                duration_ms nulls last
        ) as pick
    from read_csv({songs}, header = true)
)
where pick = 1;

create temp table genre_kpis_daily as
with

joined as (
    select
        cast(plays.listen_time as date) as listen_date,
        plays.user_id,
        plays.track_id,
        coalesce(tracks.track_genre, 'unknown') as track_genre,
        tracks.track_name,
        tracks.popularity,
        tracks.duration_ms
    from plays
    left join tracks on plays.track_id = tracks.track_id
),

per_track as (
    select listen_date, track_genre, track_id, any_value(track_name) as track_name,
        any_value(popularity) as popularity, count(*) as plays
    from joined
    group by all
),

top_track as (
    select * from per_track
    qualify row_number() over (
        partition by listen_date, track_genre
        order by plays desc, popularity desc nulls last, track_id collate c
    ) = 1
),

genres as (
    select
        listen_date,
        track_genre,
        count(*) as listen_count,
        count(distinct user_id) as unique_listeners,
        avg(duration_ms / 1000.0) as avg_track_duration_sec,
        avg(popularity) as avg_popularity
    from joined
    group by all
)

select
    genres.*,
    genres.listen_count / sum(genres.listen_count) over (partition by genres.listen_date)
        as popularity_index,
    top_track.track_id as most_popular_track_id,
    top_track.track_name as most_popular_track_name,
    top_track.plays as most_popular_track_plays
from genres
join top_track using (listen_date, track_genre);

create temp table top_artists_hourly as
with credits as (
    select distinct track_id, trim(artist) as artist_name
    from (select track_id, unnest(string_split(artists, ';')) as artist from tracks)
    where trim(artist) <> ''
),

artist_plays as (
    select date_trunc('hour', plays.listen_time) as listen_hour, credits.artist_name,
        count(*) as listen_count
    from plays
    join credits on plays.track_id = credits.track_id
    group by all
)

select * from (
    select
        listen_hour,
        row_number() over (
            partition by listen_hour order by listen_count desc, artist_name collate c
        ) as artist_rank,
        artist_name,
        listen_count
    from artist_plays
)
where artist_rank <= 5;

create temp table listening_kpis_hourly as
select
    date_trunc('hour', plays.listen_time) as listen_hour,
    cast(date_trunc('hour', plays.listen_time) as date) as listen_date,
    hour(date_trunc('hour', plays.listen_time)) as hour_of_day,
    count(*) as listen_count,
    count(distinct plays.user_id) as unique_listeners,
    count(distinct plays.track_id) as distinct_tracks,
    count(distinct plays.track_id) / count(*) as track_diversity_index,
    any_value(top.artist_name) as top_artist,
    any_value(top.listen_count) as top_artist_plays
from plays
left join top_artists_hourly as top
    on date_trunc('hour', plays.listen_time) = top.listen_hour and top.artist_rank = 1
group by all;
