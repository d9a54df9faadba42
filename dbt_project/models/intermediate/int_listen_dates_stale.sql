{{
    config(
        materialized='table',
        dist='all',
    )
}}

/*
    The listen dates fct_genre_kpis_daily recomputes in this build (macros/stale_periods.sql),
    computed once: its pre-hook deletes them and its select rebuilds them.
*/

{{ stale_periods('listen_date', 'fct_genre_kpis_daily') }}
