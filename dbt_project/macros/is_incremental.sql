{#
    Project override of dbt's is_incremental(), for checks without a warehouse:
    - var `music_elt_offline_compile` true: answers false without asking the warehouse, so
      `dbt compile --target redshift` can render every model (as a full build) with no cluster;
    - var `music_elt_assume_incremental` true: answers true, so sqlfluff (`make lint`) renders
      and lints each model's incremental branch on an empty in-memory DuckDB.
    Otherwise it defers to dbt's own implementation. Unit tests still override it with
    `overrides: macros:`.
#}
{% macro is_incremental() %}
    {%- if var('music_elt_offline_compile', false) | string | lower in ('true', '1', 'yes') -%}
        {{ return(false) }}
    {%- endif -%}
    {%- if var('music_elt_assume_incremental', false) | string | lower in ('true', '1', 'yes') -%}
        {{ return(true) }}
    {%- endif -%}
    {{ return(dbt.is_incremental()) }}
{% endmacro %}
