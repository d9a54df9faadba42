{#
    Trims ASCII whitespace (space, tab, line feed, vertical tab, form feed, carriage return) around
    a text value and turns an empty result into null: blank means missing. The characters to trim
    are one string literal (rendered from the escapes below), the form Redshift's TRIM documents
    ("TRIM function": BOTH 'characters' FROM string), which PostgreSQL and DuckDB run as well.
#}
{% macro blank_to_null(expression) -%}
    {%- set ascii_whitespace = " \t\n\x0b\x0c\r" -%}
    nullif(trim(both '{{ ascii_whitespace }}' from {{ expression }}), '')
{%- endmacro %}
