{% macro stale_periods(period, plays, stored=none) -%}
    {#-
        The periods (dates or hours) a KPI mart must recompute:
        - those whose play count in `plays` (fct_listens, read directly: DuckDB materializes a
          CTE read twice) differs from the sum of listen_count `stored` holds for them, that
          `stored` lacks or that `plays` no longer has;
        - those with a play first loaded by a load above the last green dbt build's watermark
          (a new play; a correction can swap plays without changing the count);
        - every period when a songs snapshot was loaded above that watermark (genres, names and
          artists reach built periods that way, with no re-parse of the streams).
        Watermarks are load sequence numbers of the ledger, never clock times.
        With no stored relation (it does not exist yet) every period is stale. The KPI marts
        delete these periods in a pre-hook (a period whose plays all vanished must go too), then
        append every period missing from them (incremental strategy `append`): each stale
        period is deleted once, in the same transaction as its new rows. The select has no
        placeholder column: every column is typed by the relation it comes from.
    -#}
    {#- with no stored relation, only current periods (no untyped null column to coalesce) -#}
    select
        {%- if stored is not none %}
            coalesce(current_counts.{{ period }}, stored_counts.{{ period }}) as {{ period }}
        {%- else %}
            current_counts.{{ period }}
        {%- endif %}
    from (
        select
            {{ period }},
            count(*) as play_count
        from {{ plays }}
        group by {{ period }}
    ) as current_counts
    {%- if stored is not none %}
        full outer join (
            select
                {{ period }},
                sum(listen_count) as play_count
            from {{ stored }}
            group by {{ period }}
        ) as stored_counts
            on current_counts.{{ period }} = stored_counts.{{ period }}
        where
            current_counts.{{ period }} is null
            or stored_counts.{{ period }} is null
            or stored_counts.play_count <> current_counts.play_count
        union
        select {{ period }}
        from {{ plays }}
        where
            first_load_seq > {{ last_green_build_load_seq() }}
            or {{ songs_loaded_since_last_green_build() }}
    {%- endif %}
{%- endmacro %}


{% macro last_green_build_load_seq() -%}
    {#-
        The watermark of the last green dbt build: the ledger's largest load sequence number
        when it started (0 before the first). Loads above it are not in the marts yet.
    -#}
    (
        select coalesce(max(builds.load_seq), 0)
        from {{ source('meta', 'dbt_builds') }} as builds
    )
{%- endmacro %}


{% macro songs_loaded_since_last_green_build() -%}
    {#- Whether a songs snapshot was loaded above the last green dbt build's watermark. -#}
    exists (
        select 1
        from {{ source('meta', 'load_ledger') }} as ledger
        where
            ledger.target_table = 'raw_rds.songs'
            and ledger.status = 'loaded'
            and ledger.load_seq > {{ last_green_build_load_seq() }}
    )
{%- endmacro %}


{% macro delete_stale_periods(period, stored=none) -%}
    {#-
        Pre-hook of an incremental KPI mart: delete its stale periods (see stale_periods). With
        no stored relation to compare with (fct_top_artists_hourly built while
        fct_listening_kpis_hourly does not exist, e.g. after a first build in which that model
        failed) every period is stale: all rows go, and the model appends every period.
    -#}
    {%- if is_incremental() and stored is not none %}
        delete from {{ this }}
        where {{ period }} in ({{ stale_periods(period, ref('fct_listens'), stored) }})
    {%- elif is_incremental() %}
        delete from {{ this }}
    {%- endif %}
{%- endmacro %}
