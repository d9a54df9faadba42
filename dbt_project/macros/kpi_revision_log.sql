{#
    The revision log the publish step appends to (source meta.kpi_revisions), or, before the
    first publish created it, a subquery with its columns and no rows. `dbt compile` for
    Redshift without a cluster (var music_elt_offline_compile) assumes the log exists.
#}
{% macro kpi_revision_log() -%}
    {%- set log = source('meta', 'kpi_revisions') -%}
    {%- if execute and not var('music_elt_offline_compile') and load_relation(log) is none -%}
        {%- set text = 'varchar(65535)' if target.type == 'redshift' else dbt.type_string() -%}
        (
            select
                cast(null as {{ text }}) as mart,
                cast(null as {{ text }}) as grain,
                cast(null as {{ text }}) as kpi,
                cast(null as {{ text }}) as old_value,
                cast(null as {{ text }}) as new_value,
                cast(null as {{ dbt.type_timestamp() }}) as old_published_at,
                cast(null as {{ dbt.type_timestamp() }}) as new_published_at,
                cast(null as {{ text }}) as caused_by
            where 1 = 0
        )
    {%- else -%}
        {{ log }}
    {%- endif -%}
{%- endmacro %}
