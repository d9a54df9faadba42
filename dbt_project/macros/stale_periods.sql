{% macro stale_periods(period, plays, stored=none) -%}
    {#-
        The periods (dates or hours) a KPI mart must recompute: those whose play count in
        `plays` differs from the sum of listen_count `stored` holds for them, or that `stored`
        lacks. Plays are only ever added, so any change to a period changes its count. With no
        stored relation (it does not exist yet) every period is stale.
    -#}
    select current_counts.{{ period }}
    from (
        select
            {{ period }},
            count(*) as play_count
        from {{ plays }}
        group by {{ period }}
    ) as current_counts
    {%- if stored is not none %}
        left join (
            select
                {{ period }},
                sum(listen_count) as play_count
            from {{ stored }}
            group by {{ period }}
        ) as stored_counts
            on current_counts.{{ period }} = stored_counts.{{ period }}
        where
            stored_counts.{{ period }} is null
            or stored_counts.play_count <> current_counts.play_count
    {%- endif %}
{%- endmacro %}
