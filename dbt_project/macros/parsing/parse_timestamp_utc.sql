{#
    Text to a UTC `timestamp` (without time zone) without ever raising, on DuckDB, PostgreSQL
    and Redshift. Expects a trimmed, non-blank value (see blank_to_null); returns null when the
    value cannot be parsed.

    Accepted (the KPI contract): `YYYY-MM-DD HH:MM:SS` meaning UTC, a `T` instead of the space,
    fractional seconds (1 to 6 digits: microseconds at most; more digits are not accepted), and
    an explicit zone: `Z`, `+HH`, `+HHMM`, `+HH:MM` (or `-`), converted to UTC.
    With allow_date_only=true a bare `YYYY-MM-DD` is also accepted (midnight UTC).

    Validation before any cast: the shape by regex, then year >= 1, month 1-12, day within the
    month (leap years: divisible by 4 and not by 100, or by 400), hour 0-23, minute 0-59,
    second 0-59 (no leap second), zone hours 0-23 and minutes 0-59. Every cast sits in a CASE
    branch reached only when its text is known to be valid.
#}
{% macro parse_timestamp_utc(text_expression, allow_date_only=false) -%}
    {{ return(adapter.dispatch('parse_timestamp_utc', 'music_elt')(text_expression, allow_date_only)) }}
{%- endmacro %}

{#- The text to parse: with allow_date_only a bare date gets midnight appended. -#}
{% macro timestamp_text(text_expression, allow_date_only) -%}
    {%- if allow_date_only -%}
        (case when length({{ text_expression }}) = 10 then {{ text_expression }} || ' 00:00:00' else {{ text_expression }} end)
    {%- else -%}
        {{ text_expression }}
    {%- endif -%}
{%- endmacro %}

{% macro default__parse_timestamp_utc(text_expression, allow_date_only=false) -%}
    {%- set value = music_elt.timestamp_text(text_expression, allow_date_only) -%}
    {%- set pattern = '^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]{1,6})?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$' -%}
    {%- set year = music_elt.guarded_cast('substring(' ~ value ~ ', 1, 4)', 'integer') -%}
    {%- set month = music_elt.guarded_cast('substring(' ~ value ~ ', 6, 2)', 'integer') -%}
    {%- set day = music_elt.guarded_cast('substring(' ~ value ~ ', 9, 2)', 'integer') -%}
    {%- set hour = music_elt.guarded_cast('substring(' ~ value ~ ', 12, 2)', 'integer') -%}
    {%- set minute = music_elt.guarded_cast('substring(' ~ value ~ ', 15, 2)', 'integer') -%}
    {%- set second = music_elt.guarded_cast('substring(' ~ value ~ ', 18, 2)', 'integer') -%}
    {#- what follows the seconds: optional fraction, then optional zone -#}
    {%- set tail = 'substring(' ~ value ~ ', 20, length(' ~ value ~ '))' -%}
    {%- set fraction = "regexp_replace(" ~ tail ~ ", '[Z+-].*$', '')" -%}
    {%- set zone = "regexp_replace(" ~ tail ~ ", '^[.][0-9]+', '')" -%}
    {%- set zone_hours -%}
        (case when length({{ zone }}) >= 3 then {{ music_elt.guarded_cast('substring(' ~ zone ~ ', 2, 2)', 'integer') }} else 0 end)
    {%- endset -%}
    {%- set zone_minutes -%}
        (case when length({{ zone }}) >= 5 then {{ music_elt.guarded_cast("substring(replace(" ~ zone ~ ", ':', ''), 4, 2)", 'integer') }} else 0 end)
    {%- endset -%}
    {%- set zone_sign = "(case when substring(" ~ zone ~ ", 1, 1) = '-' then -1 else 1 end)" -%}
    {%- set local_timestamp -%}
        {{ music_elt.guarded_cast('substring(' ~ value ~ ", 1, 10) || ' ' || substring(" ~ value ~ ', 12, 8) || ' ~ fraction, 'timestamp') }}
    {%- endset -%}
    case
        when {{ music_elt.regex_full_match(value, pattern) }}
            then
                case
                    when
                        {{ year }} >= 1
                        and {{ month }} between 1 and 12
                        and {{ day }} between 1 and (
                            case
                                when {{ month }} in (4, 6, 9, 11) then 30
                                when {{ month }} = 2
                                    and (
                                        mod({{ year }}, 400) = 0
                                        or (mod({{ year }}, 4) = 0 and mod({{ year }}, 100) <> 0)
                                    )
                                    then 29
                                when {{ month }} = 2 then 28
                                else 31
                            end
                        )
                        and {{ hour }} <= 23
                        and {{ minute }} <= 59
                        and {{ second }} <= 59
                        and {{ zone_hours }} <= 23
                        and {{ zone_minutes }} <= 59
                        then {{ dbt.dateadd('minute', '-1 * ' ~ zone_sign ~ ' * (' ~ zone_hours ~ ' * 60 + ' ~ zone_minutes ~ ')', local_timestamp) }}
                end
    end
{%- endmacro %}

{#
    DuckDB: values without a zone (nearly all of them) take a cheap path, one regex for the
    shape and DuckDB's own timestamp cast, which returns null for an impossible calendar day,
    minute or second. The cast is more lenient than the contract in two places, checked here:
    it reads hour 24 as midnight of the next day and year 0000 as 1 BC. Every other value (a
    zone, or not the shape) goes through the portable parser above.
#}
{% macro duckdb__parse_timestamp_utc(text_expression, allow_date_only=false) -%}
    {%- set value = music_elt.timestamp_text(text_expression, allow_date_only) -%}
    case
        when regexp_full_match({{ value }}, '^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]{1,6})?$')
            then
                case
                    when substring({{ value }}, 12, 2) < '24' and substring({{ value }}, 1, 4) <> '0000'
                        then try_cast({{ value }} as timestamp)
                end
        else {{ music_elt.default__parse_timestamp_utc(text_expression, allow_date_only) }}
    end
{%- endmacro %}
