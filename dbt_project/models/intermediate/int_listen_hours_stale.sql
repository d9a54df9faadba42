{{
    config(
        materialized='table',
        dist='all',
    )
}}

/*
    The listen hours both hourly KPI marts recompute in this build (macros/stale_periods.sql),
    computed once, against fct_listening_kpis_hourly (fct_top_artists_hourly has no per-hour
    total to compare with): their pre-hooks delete them and their selects rebuild them.
*/

{{ stale_periods('listen_hour', 'fct_listening_kpis_hourly', also_rebuilt='fct_top_artists_hourly') }}
