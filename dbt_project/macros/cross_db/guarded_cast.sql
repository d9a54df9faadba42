{#
    Cast for values already validated by the caller (always inside a CASE branch guarded by a
    regex and range check). PostgreSQL has no try_cast, so there the guard is what keeps bad
    input from raising (PostgreSQL evaluates a CASE branch only when its condition holds).
    DuckDB's optimizer may evaluate a cast outside its CASE branch (common sub-expression
    hoisting), and Redshift does not document whether CASE short-circuits, so on both the cast
    is also made non-raising with try_cast (Redshift: "TRY_CAST function", null on a conversion
    error).
#}
{% macro guarded_cast(expression, data_type) -%}
    {{ return(adapter.dispatch('guarded_cast', 'music_elt')(expression, data_type)) }}
{%- endmacro %}

{% macro default__guarded_cast(expression, data_type) -%}
    cast({{ expression }} as {{ data_type }})
{%- endmacro %}

{% macro duckdb__guarded_cast(expression, data_type) -%}
    try_cast({{ expression }} as {{ data_type }})
{%- endmacro %}

{% macro redshift__guarded_cast(expression, data_type) -%}
    try_cast({{ expression }} as {{ data_type }})
{%- endmacro %}
