{#
    Text to bigint without ever raising: an optional sign and decimal digits (leading zeros
    allowed) whose value fits in 64 bits; anything else (decimals, exponents, letters, blanks
    inside, out of range) gives null. Expects a trimmed value (see blank_to_null).
    The range check compares the significant digits as text before casting: 19 digits must
    not exceed 9223372036854775807 (...808 for negatives).
#}
{% macro parse_bigint(text_expression) -%}
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
