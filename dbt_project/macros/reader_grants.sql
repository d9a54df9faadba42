{#
    The grants config of a relation readers read where dbt (re)creates it: SELECT for the
    reader role (MUSIC_ELT_READER_ROLE) on PostgreSQL and Redshift, nothing on DuckDB (readers
    read its serving copy) or when no reader role is set. The publish step grants the same on
    the relations it writes, and USAGE on their schemas.
#}
{% macro reader_grants() -%}
    {%- set role = env_var('MUSIC_ELT_READER_ROLE', '') | trim -%}
    {%- if role and target.type in ('postgres', 'redshift') -%}
        {{ return({'select': [role]}) }}
    {%- else -%}
        {{ return({}) }}
    {%- endif -%}
{%- endmacro %}
