{{
    config(
        dist='all',
        sort='track_id',
    )
}}

with

songs as (

    select
        track_id,
        track_name,
        artists,
        album_name,
        track_genre,
        popularity,
        duration_ms
    from {{ ref('stg_rds__songs') }}

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
    from songs

)

select * from final
