{{ config(severity='warn') }}

-- Reports the track_ids the songs source holds more than once (the number of failing rows is
-- the number of duplicated track_ids). stg_rds__songs keeps one row each by a documented rule.
with

songs as (

    select {{ blank_to_null('track_id') }} as track_id
    from {{ source('rds', 'songs') }}

)

select
    track_id,
    count(*) as record_count
from songs
where track_id is not null
group by track_id
having count(*) > 1
