{#
    Trims ASCII whitespace (space, tab, line feed, vertical tab, form feed, carriage return) around
    a text value and turns an empty
    result into null: blank means missing.
#}
{% macro blank_to_null(expression) -%}
    nullif(trim(both ' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13) from {{ expression }}), '')
{%- endmacro %}
