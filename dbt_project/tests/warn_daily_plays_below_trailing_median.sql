{{ config(severity='warn') }}

-- The volume check: lists each day whose plays fall below volume_drop_ratio times the median
-- of the volume_trailing_days days before it (only when at least volume_min_trailing_days of
-- them had plays). A warning, not an error: a quiet day is not wrong data, but a drop this
-- large is usually a missing or truncated file. The three vars are in dbt_project.yml.
with

daily as (

    select
        listen_date,
        listen_count
    from {{ ref('daily_listeners') }}

),

day_history as (

    select
        day_.listen_date,
        day_.listen_count,
        count(*) as trailing_days,
        percentile_cont(0.5) within group (order by history.listen_count) as trailing_median
    from daily as day_
    inner join daily as history
        on
            {{ dbt.datediff('history.listen_date', 'day_.listen_date', 'day') }}
            between 1 and {{ var('volume_trailing_days') }}
    group by day_.listen_date, day_.listen_count

)

select
    listen_date,
    listen_count,
    trailing_median,
    trailing_days
from day_history
where
    trailing_days >= {{ var('volume_min_trailing_days') }}
    and listen_count < {{ var('volume_drop_ratio') }} * trailing_median
