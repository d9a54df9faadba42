{#
    True when the whole text expression matches the POSIX-style pattern (write the pattern
    with ^ and $ anchors). The pattern is inlined as a string literal: keep it free of quotes
    and backslashes (use [.] and [+] instead of escapes), which Redshift literals would mangle.
#}
{% macro regex_full_match(expression, pattern) -%}
    {{ return(adapter.dispatch('regex_full_match', 'music_elt')(expression, pattern)) }}
{%- endmacro %}

{% macro default__regex_full_match(expression, pattern) -%}
    ({{ expression }} ~ '{{ pattern }}')
{%- endmacro %}

{% macro duckdb__regex_full_match(expression, pattern) -%}
    regexp_full_match({{ expression }}, '{{ pattern }}')
{%- endmacro %}
