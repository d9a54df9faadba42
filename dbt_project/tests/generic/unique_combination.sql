{#
    The combination of `columns` is unique: the primary key of a model whose grain is several
    columns (KPI grains). Rows with a null in any of the columns count as values too.
    Returns one row per duplicated combination.
#}
{% test unique_combination(model, columns) %}

    select
        {{ columns | join(',\n        ') }},
        count(*) as row_count
    from {{ model }}
    group by
        {{ columns | join(',\n        ') }}
    having count(*) > 1

{% endtest %}
