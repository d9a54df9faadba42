{{
    config(
        materialized='table',
        schema='kpi_build',
        dist='even',
        sort='listen_date',
        meta={'grain': ['listen_date'], 'published_as': 'served.daily_listeners'},
    )
}}

/*
    A day's plays and listeners over all genres. The listeners of a day are not the sum of its
    genres' listeners (one user plays several genres), so they are counted here from the plays.
    Built with the KPI marts in kpi_build; readers read it as served.daily_listeners once the
    build is green and published.
*/

with

listens as (

    select
        listen_date,
        user_id
    from {{ ref('fct_listens') }}

),

final as (

    select
        listen_date,
        count(*) as listen_count,
        count(distinct user_id) as unique_listeners
    from listens
    group by listen_date

)

select * from final
