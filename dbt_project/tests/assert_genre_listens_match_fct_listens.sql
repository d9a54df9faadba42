-- The genre rows of a day add up to all the day's kept plays (unknown tracks included), and
-- every day with plays has genre rows.
with

listens as (

    select listen_date
    from {{ ref('fct_listens') }}

),

genre_kpis as (

    select
        listen_date,
        listen_count
    from {{ ref('fct_genre_kpis_daily') }}

),

plays_by_date as (

    select
        listen_date,
        count(*) as listen_count
    from listens
    group by listen_date

),

genre_plays_by_date as (

    select
        listen_date,
        sum(listen_count) as listen_count
    from genre_kpis
    group by listen_date

),

compared as (

    select
        coalesce(plays_by_date.listen_date, genre_plays_by_date.listen_date) as listen_date,
        plays_by_date.listen_count as fct_listens_count,
        genre_plays_by_date.listen_count as genre_kpis_count
    from plays_by_date
    full outer join genre_plays_by_date
        on plays_by_date.listen_date = genre_plays_by_date.listen_date

)

select *
from compared
where
    fct_listens_count is null
    or genre_kpis_count is null
    or fct_listens_count <> genre_kpis_count
