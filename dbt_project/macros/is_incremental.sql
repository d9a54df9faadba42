{#
    Project override of dbt's is_incremental(). With the var `music_elt_offline_compile` set to
    true it answers false without asking the warehouse, so `dbt compile --target redshift` can
    render every model (as a full build) when no cluster is reachable. Otherwise it defers to
    dbt's own implementation. Unit tests still override it with `overrides: macros:`.
#}
{% macro is_incremental() %}
    {%- if var('music_elt_offline_compile', false) | string | lower in ('true', '1', 'yes') -%}
        {{ return(false) }}
    {%- endif -%}
    {{ return(dbt.is_incremental()) }}
{% endmacro %}
