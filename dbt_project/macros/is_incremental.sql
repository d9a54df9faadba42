{#
    Project override of dbt's is_incremental(), for rendering SQL without a warehouse. The var
    `music_elt_offline_compile` answers without asking one: `full` (or true) renders a first
    build, `incremental` an incremental run over existing tables (the offline Redshift compile in
    tests/integration/test_dbt_redshift.py renders both; sqlfluff in `make lint` lints the
    incremental branch, a superset of the full-refresh SQL). Unset, it defers to dbt's own
    implementation. Unit tests still override it with `overrides: macros:`.
#}
{% macro is_incremental() %}
    {%- set offline = var('music_elt_offline_compile', false) | string | lower -%}
    {%- if offline == 'incremental' -%}
        {{ return(true) }}
    {%- elif offline in ('true', '1', 'yes', 'full') -%}
        {{ return(false) }}
    {%- endif -%}
    {{ return(dbt.is_incremental()) }}
{% endmacro %}

