-- The genre rows of a day share the day's plays: their popularity_index adds up to 1.
with

genre_kpis as (

    select
        listen_date,
        popularity_index
    from {{ ref('fct_genre_kpis_daily') }}

),

daily_sums as (

    select
        listen_date,
        sum(popularity_index) as popularity_index_sum
    from genre_kpis
    group by listen_date

)

select *
from daily_sums
where abs(popularity_index_sum - 1) > 1e-9
