{#
    Project override of dbt's is_incremental(), for compiling without a warehouse. The var
    `music_elt_offline_compile` renders every model without asking the warehouse (no cluster is
    reachable where the Redshift SQL is checked): `full` (or true) as a first build,
    `incremental` as an incremental run over existing tables. Unset, it defers to dbt's own
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


{#
    The relation `identifier` beside this model (same database and schema), or none when it does
    not exist. Offline (see is_incremental above) it is assumed to exist.
#}
{% macro sibling_relation(identifier) %}
    {%- if var('music_elt_offline_compile', false) | string | lower == 'incremental' -%}
        {{ return(api.Relation.create(database=this.database, schema=this.schema, identifier=identifier)) }}
    {%- endif -%}
    {{ return(adapter.get_relation(database=this.database, schema=this.schema, identifier=identifier)) }}
{% endmacro %}
