{{
    config(
        materialized='table',
        dist='all',
        sort='track_id',
    )
}}

/*
    One row per (track_id, artist_name): the artists credited on a track. `artists` is split on
    ';', each name trimmed, empty names dropped, and a name credited twice on the same track
    counts once. Portable splitting: each track is joined to the credit positions 1..n it has
    (n = number of ';' + 1) from a 1..1000 spine, and split_part takes the n-th name. The data
    test assert_artist_credits_fit_spine fails if a track ever has more than 1000 credits.
    A table, built once per run: the spine join is a range join (>=), a nested loop that a view
    would repeat for every model reading it. Small (one row per credit): on Redshift a copy on
    every node (dist all), sorted by the key the marts join on.
*/

with

songs as (

    select
        track_id,
        artists
    from {{ ref('stg_rds__songs') }}
    where artists is not null

),

digits as (

    select 0 as digit
    union all
    select 1 as digit
    union all
    select 2 as digit
    union all
    select 3 as digit
    union all
    select 4 as digit
    union all
    select 5 as digit
    union all
    select 6 as digit
    union all
    select 7 as digit
    union all
    select 8 as digit
    union all
    select 9 as digit

),

credit_positions as (

    select hundreds.digit * 100 + tens.digit * 10 + units.digit + 1 as credit_position
    from digits as hundreds
    cross join digits as tens
    cross join digits as units

),

songs_with_credit_counts as (

    select
        track_id,
        artists,
        length(artists) - length(replace(artists, ';', '')) + 1 as credit_count
    from songs

),

credit_parts as (

    select
        songs_with_credit_counts.track_id,
        {{ split_part_at('songs_with_credit_counts.artists', ';', 'credit_positions.credit_position') }} as credit_text
    from songs_with_credit_counts
    inner join credit_positions
        on songs_with_credit_counts.credit_count >= credit_positions.credit_position

),

credits as (

    select
        track_id,
        {{ blank_to_null('credit_text') }} as artist_name
    from credit_parts

),

final as (

    select distinct
        track_id,
        artist_name
    from credits
    where artist_name is not null

)

select * from final
