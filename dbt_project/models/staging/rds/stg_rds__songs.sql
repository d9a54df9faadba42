/*
    One row per track_id. The source may hold several rows for a track_id; the kept row is the
    first by: highest popularity (nulls last), then smallest track_genre, album_name,
    track_name, artists (byte order, nulls last), then smallest duration_ms. Extra source
    columns (audio features) are not read, so their presence or absence never matters.
*/

with

source as (

    select
        track_id,
        artists,
        album_name,
        track_name,
        popularity,
        duration_ms,
        track_genre
    from {{ source('rds', 'songs') }}

),

cleaned as (

    select
        {{ blank_to_null('track_id') }} as track_id,
        {{ blank_to_null('track_name') }} as track_name,
        {{ blank_to_null('artists') }} as artists,
        {{ blank_to_null('album_name') }} as album_name,
        {{ blank_to_null('track_genre') }} as track_genre,
        {{ blank_to_null('popularity') }} as popularity_text,
        {{ blank_to_null('duration_ms') }} as duration_ms_text
    from source

),

typed as (

    select
        track_id,
        track_name,
        artists,
        album_name,
        track_genre,
        {{ parse_bigint('popularity_text') }} as popularity,
        {{ parse_bigint('duration_ms_text') }} as duration_ms
    from cleaned
    where track_id is not null

),

ranked as (

    select
        *,
        row_number() over (
            partition by track_id
            order by
                popularity desc nulls last,
                {{ binary_text_order('track_genre') }} asc nulls last,
                {{ binary_text_order('album_name') }} asc nulls last,
                {{ binary_text_order('track_name') }} asc nulls last,
                {{ binary_text_order('artists') }} asc nulls last,
                duration_ms asc nulls last
        ) as track_row_number
    from typed

),

final as (

    select
        track_id,
        track_name,
        artists,
        album_name,
        track_genre,
        popularity,
        duration_ms
    from ranked
    where track_row_number = 1

)

select * from final
