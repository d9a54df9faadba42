{#
    Cast for values already validated by the caller (always inside a CASE branch guarded by a
    regex and range check). PostgreSQL and Redshift have no try_cast, so the guard is what keeps
    bad input from raising. DuckDB's optimizer may evaluate a cast outside its CASE branch
    (common sub-expression hoisting), so there the cast is also made non-raising with try_cast.
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
