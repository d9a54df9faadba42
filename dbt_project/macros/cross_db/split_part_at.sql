{#
    n-th part (1-based) of a delimited text; empty or null when there are fewer parts.
    dbt.split_part cannot take a column as part number on Redshift (dbt-redshift compares the
    part number with 0 while compiling), so this calls the SQL function that all three
    warehouses share directly: split_part(text, delimiter, n).
#}
{% macro split_part_at(text_expression, delimiter, part_number_expression) -%}
    {{ return(adapter.dispatch('split_part_at', 'music_elt')(text_expression, delimiter, part_number_expression)) }}
{%- endmacro %}

{% macro default__split_part_at(text_expression, delimiter, part_number_expression) -%}
    split_part({{ text_expression }}, '{{ delimiter }}', {{ part_number_expression }})
{%- endmacro %}
