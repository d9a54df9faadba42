{#
    dbt's convention (its generate_schema_name_for_env), with the warehouse kinds as target names:
    - a production target (var `production_targets`: `postgres`, `redshift`, what `music-elt
      run` and the DAG pass) and any DuckDB target use a custom schema as named: `marts`;
    - every other target (`postgres_dev`, `redshift_dev`, ...) prefixes it with the target's
      schema: `dbt_alice_marts`, so each developer builds into schemas of their own.
    Nodes without a custom schema use the target's schema. Sources name their schemas (`raw_*`)
    themselves: every target reads the same raw tables.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- elif target.type == 'duckdb' or target.name in var('production_targets') -%}
        {{ custom_schema_name | trim }}
    {%- else -%}
        {{ target.schema }}_{{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
