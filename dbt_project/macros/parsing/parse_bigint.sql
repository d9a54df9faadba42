{#
    Text to bigint without ever raising: an optional sign and decimal digits (leading zeros
    allowed) whose value fits in 64 bits; anything else (decimals, exponents, letters, blanks
    inside, out of range) gives null. Expects a trimmed value (see blank_to_null).
    The range check compares the significant digits as text before casting: 19 digits must
    not exceed 9223372036854775807 (...808 for negatives).
#}
{% macro parse_bigint(text_expression) -%}
    {{ return(adapter.dispatch('parse_bigint', 'music_elt')(text_expression)) }}
{%- endmacro %}

{% macro default__parse_bigint(text_expression) -%}
    {%- set significant_digits = "regexp_replace(" ~ text_expression ~ ", '^[+-]?0*', '')" -%}
    case
        when {{ music_elt.regex_full_match(text_expression, '^[+-]?[0-9]+$') }}
            then
                case
                    when
                        length({{ significant_digits }}) < 19
                        or (
                            length({{ significant_digits }}) = 19
                            and {{ music_elt.binary_text_order(significant_digits) }}
                            <= (case when {{ text_expression }} like '-%' then '9223372036854775808' else '9223372036854775807' end)
                        )
                        then {{ music_elt.guarded_cast(text_expression, 'bigint') }}
                end
    end
{%- endmacro %}

{#
    DuckDB: the same rule, cheaper. try_cast alone is more lenient than the contract ('12.0',
    '1e3', '0x10', '1_000' all cast), so the regex keeps the shape; within that shape try_cast
    gives null exactly when the value does not fit in 64 bits.
#}
{% macro duckdb__parse_bigint(text_expression) -%}
    case when regexp_full_match({{ text_expression }}, '^[+-]?[0-9]+$') then try_cast({{ text_expression }} as bigint) end
{%- endmacro %}
