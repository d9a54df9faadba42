{{
    config(
        materialized='table',
        schema='kpi_build',
        dist='even',
        sort=['source_file', 'reject_reason'],
        meta={'grain': ['source_file', 'reject_reason'], 'published_as': 'served.rejected_rows_by_file'},
    )
}}

/*
    Rejected stream rows per file and reason, with when the file was loaded. Built with the KPI
    marts in kpi_build; readers read it as served.rejected_rows_by_file once published.
*/

with

rejected_listens as (

    select
        source_file,
        reject_reason,
        loaded_at
    from {{ ref('fct_rejected_listens') }}

),

final as (

    select
        source_file,
        reject_reason,
        count(*) as rejected_rows,
        max(loaded_at) as loaded_at
    from rejected_listens
    group by source_file, reject_reason

)

select * from final
