{% macro get_incremental_delete_insert_from_first_date_sql(arg_dict) -%}
    {#-
        Incremental strategy `delete_insert_from_first_date` (fct_listens): dbt's delete+insert
        with one more incremental predicate, that the deleted rows are on or after the first
        listen_date of the rows this run writes (read from the temporary relation dbt just
        built, given as a literal). Every row the unique key matches is on such a date, so the
        predicate removes nothing the key would not; on Redshift the delete then reads only the
        blocks of fct_listens' sort key (listen_date) from that date on, not the whole table.
    -#}
    {%- set first = run_query(
        'select min(listen_date) from ' ~ arg_dict['temp_relation']
    ).columns[0].values()[0] -%}
    {%- if first is none -%}
        {%- set window = '1 = 0' -%}
    {%- else -%}
        {%- set window = incremental_target() ~ ".listen_date >= cast('" ~ first ~ "' as date)" -%}
    {%- endif -%}
    {%- set predicates = (arg_dict['incremental_predicates'] or []) + [window] -%}
    {%- do arg_dict.update({'incremental_predicates': predicates}) -%}
    {{ return(get_incremental_delete_insert_sql(arg_dict)) }}
{%- endmacro %}


{% macro incremental_target() -%}
    {#-
        How an incremental predicate names the target table inside dbt's delete+insert:
        DBT_INTERNAL_DEST (dbt's default alias; dbt-redshift replaces it with the table's name),
        DBT_INCREMENTAL_TARGET on DuckDB (dbt-duckdb's alias for a composite unique key).
    -#}
    {{ return(adapter.dispatch('incremental_target', 'music_elt')()) }}
{%- endmacro %}

{% macro default__incremental_target() -%}
    {{ return('DBT_INTERNAL_DEST') }}
{%- endmacro %}

{% macro duckdb__incremental_target() -%}
    {{ return('DBT_INCREMENTAL_TARGET') }}
{%- endmacro %}
