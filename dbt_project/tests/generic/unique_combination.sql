{#
    The combination of `columns` is unique: the primary key of a model whose grain is several
    columns (KPI grains). Rows with a null in any of the columns count as values too.
    Returns one row per duplicated combination.

    recent_column (optional, a load sequence column): unless dbt runs with --full-refresh, only the
    combinations of rows whose recent_column is above the last green build's watermark are checked
    (against every row of the model): what an incremental run just wrote, not the whole history
    again. A full refresh, and any build before the first green one, checks every combination.
#}
{% test unique_combination(model, columns, recent_column=none) %}

    {#- Before the first green build every row is recent: the plain check is the cheaper one -#}
    {%- set recent_only = recent_column and not flags.FULL_REFRESH -%}
    {%- if recent_only and execute and not var('music_elt_offline_compile', false) -%}
        {%- set builds = run_query("select count(*) from " ~ source('meta', 'dbt_builds')) -%}
        {%- set recent_only = builds.columns[0].values()[0] > 0 -%}
    {%- endif %}

    select
        {{ columns | join(',\n        ') }},
        count(*) as row_count
    from {{ model }} as checked
    {% if recent_only %}
        where exists (
            select 1
            from {{ model }} as recent
            where
                recent.{{ recent_column }} > {{ last_green_build_load_seq() }}
                {% for column in columns %}
                    and recent.{{ column }} = checked.{{ column }}
                {% endfor %}
        )
    {% endif %}
    group by
        {{ columns | join(',\n        ') }}
    having count(*) > 1

{% endtest %}
