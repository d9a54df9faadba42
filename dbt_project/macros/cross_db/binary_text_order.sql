{#
    Wraps a text expression so that ORDER BY / comparisons use byte order (binary, `C`
    collation), never a locale collation: 'B' sorts before 'a'. The KPI contract requires every text
    tie-break to be identical on every warehouse.

    - postgres: `collate "C"` (byte order of the UTF-8 encoding).
    - duckdb: strings compare byte-wise by default, but a session `default_collation` (e.g.
      nocase) would change that; `collate c` forces binary. (`collate binary` is a syntax error.)
    - redshift: `collate(expr, 'case_sensitive')` forces the case-sensitive comparison, which we
      assume is byte order of the UTF-8 encoding (Redshift's default for databases created
      without COLLATE CASE_INSENSITIVE). Not checked against a cluster.
#}
{% macro binary_text_order(expression) -%}
    {{ return(adapter.dispatch('binary_text_order', 'music_elt')(expression)) }}
{%- endmacro %}

{% macro default__binary_text_order(expression) -%}
    {{ expression }} collate "C"
{%- endmacro %}

{% macro duckdb__binary_text_order(expression) -%}
    {{ expression }} collate c
{%- endmacro %}

{% macro redshift__binary_text_order(expression) -%}
    collate({{ expression }}, 'case_sensitive')
{%- endmacro %}
