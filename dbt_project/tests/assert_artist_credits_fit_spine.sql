-- int_artist_credits_split reads at most 1000 credits per track (its position spine); a track
-- with more would silently lose artists, so it fails here instead.
with

songs as (

    select
        track_id,
        artists
    from {{ ref('stg_rds__songs') }}
    where artists is not null

)

select
    track_id,
    length(artists) - length(replace(artists, ';', '')) + 1 as credit_count
from songs
where length(artists) - length(replace(artists, ';', '')) + 1 > 1000
