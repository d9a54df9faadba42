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
    log does not exist yet and this view is empty.
*/

{%- set log = none if var('music_elt_offline_compile') else load_relation(source('meta', 'kpi_revisions')) %}
{%- set text_type = 'varchar(65535)' if target.type == 'redshift' else dbt.type_string() %}

with

{% if log is none and not var('music_elt_offline_compile') %}
revisions as (

    select
        cast(null as {{ text_type }}) as mart,
        cast(null as {{ text_type }}) as grain,
        cast(null as {{ text_type }}) as kpi,
        cast(null as {{ text_type }}) as old_value,
        cast(null as {{ text_type }}) as new_value,
        cast(null as {{ dbt.type_timestamp() }}) as old_published_at,
        cast(null as {{ dbt.type_timestamp() }}) as new_published_at,
        cast(null as {{ text_type }}) as caused_by
    where 1 = 0

),
{% else %}
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
    from {{ source('meta', 'kpi_revisions') }}

),
{% endif %}

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
