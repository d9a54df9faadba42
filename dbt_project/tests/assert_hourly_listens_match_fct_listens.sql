-- Every hour with kept plays has exactly one hourly KPI row, with the same play count.
with

listens as (

    select listen_hour
    from {{ ref('fct_listens') }}

),

hourly_kpis as (

    select
        listen_hour,
        listen_count
    from {{ ref('fct_listening_kpis_hourly') }}

),

plays_by_hour as (

    select
        listen_hour,
        count(*) as listen_count
    from listens
    group by listen_hour

),

compared as (

    select
        coalesce(plays_by_hour.listen_hour, hourly_kpis.listen_hour) as listen_hour,
        plays_by_hour.listen_count as fct_listens_count,
        hourly_kpis.listen_count as hourly_kpis_count
    from plays_by_hour
    full outer join hourly_kpis
        on plays_by_hour.listen_hour = hourly_kpis.listen_hour

)

select *
from compared
where
    fct_listens_count is null
    or hourly_kpis_count is null
    or fct_listens_count <> hourly_kpis_count
