{{
    config(
        materialized='view',
        grants=reader_grants(),
    )
}}

/*
    What late and corrected files changed in KPI values readers had already seen: one row per
    published value that a later publish changed. The publish step (loaders/serving.py) derives
    these rows from the very difference it writes, in the same transaction, and appends them
    to raw_meta.kpi_revisions; this view is what readers query. Before the first publish the
    log does not exist yet and this view is empty (macros/kpi_revision_log.sql).
*/

with

revisions as (

    select
        mart,
        grain,
        kpi,
        old_value,
        new_value,
        old_published_at,
        new_published_at,
        caused_by
    from {{ kpi_revision_log() }}

),

final as (

    select
        mart,
        grain,
        kpi,
        old_value,
        new_value,
        old_published_at,
        new_published_at,
        caused_by
    from revisions

)

select * from final
