{#
    Every non-null value of the column lies within [min_value, max_value]; either bound may be
    omitted and either made exclusive (min_inclusive / max_inclusive = false).
    Returns the rows outside the range.
#}
{% test accepted_range(
    model,
    column_name,
    min_value=none,
    max_value=none,
    min_inclusive=true,
    max_inclusive=true
) %}

    {%- set below_min = '1 = 0' if min_value is none
        else column_name ~ (' < ' if min_inclusive else ' <= ') ~ min_value -%}
    {%- set above_max = '1 = 0' if max_value is none
        else column_name ~ (' > ' if max_inclusive else ' >= ') ~ max_value %}

    select *
    from {{ model }}
    where
        {{ column_name }} is not null
        and ({{ below_min }} or {{ above_max }})

{% endtest %}
