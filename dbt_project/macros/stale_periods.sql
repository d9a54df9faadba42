{% macro stale_periods(period, compared_with, also_rebuilt=none) -%}
    {#-
        The body of the intermediate models of stale periods (int_listen_dates_stale,
        int_listen_hours_stale): the periods (dates or hours) the KPI marts of that grain
        recompute in this build, computed once, before them:
        - those whose play count in fct_listens differs from the sum of listen_count the mart
          `compared_with` holds for them, that it lacks or that fct_listens no longer has;
        - those with a play first loaded by a load above the last green dbt build's watermark
          (a new play; a correction can swap plays without changing the count);
        - every period when a songs snapshot was loaded above that watermark (genres, names and
          artists reach built periods that way, with no re-parse of the streams).
        Watermarks are load sequence numbers of the ledger, never clock times.
        `compared_with` is read as the previous build left it (built_relation), not through
        ref(): it is built after this model. When it does not exist yet it is built whole and
        needs no periods, except for `also_rebuilt`, a mart of the same grain that does exist
        (fct_top_artists_hourly after a first build in which fct_listening_kpis_hourly failed):
        then every period is stale, those of fct_listens and those `also_rebuilt` holds, so
        that it deletes all its rows and appends every period.
        The select has no placeholder column: every column is typed by the relation it comes
        from.
    -#}
    {#- every ref and source on every run, so that dbt's lineage has them (at parse time the
        marts' relations are unknown and the last branch renders) -#}
    {%- set plays = ref('fct_listens') -%}
    {%- do source('meta', 'last_green_build') -%}
    {%- do source('meta', 'unbuilt_loads') -%}
    {%- do source('rds', 'songs') -%}
    {%- set stored = built_relation(compared_with) -%}
    {%- set other = built_relation(also_rebuilt) if also_rebuilt and stored is none else none -%}
    {%- if stored is not none %}
        select coalesce(current_counts.{{ period }}, stored_counts.{{ period }}) as {{ period }}
        from (
            select
                {{ period }},
                count(*) as play_count
            from {{ plays }}
            group by {{ period }}
        ) as current_counts
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
    {%- elif other is not none %}
        select {{ period }} from {{ plays }}
        union
        select {{ period }} from {{ other }}
    {%- else %}
        select {{ period }} from {{ plays }}
        where 1 = 0
    {%- endif %}
{%- endmacro %}


{% macro last_green_build_load_seq() -%}
    {#-
        The watermark of the last green dbt build: the ledger's largest load sequence number
        when it started (0 before the first). Loads above it are not in the marts yet. Read
        from the view the loaders define it in (source meta.last_green_build).
    -#}
    (
        select last_green_build.load_seq
        from {{ source('meta', 'last_green_build') }} as last_green_build
    )
{%- endmacro %}


{% macro songs_loaded_since_last_green_build() -%}
    {#-
        Whether a songs snapshot was loaded above the last green dbt build's watermark: one of
        the loads since it (source meta.unbuilt_loads, the view the loaders ask too).
    -#}
    exists (
        select 1
        from {{ source('meta', 'unbuilt_loads') }} as unbuilt_loads
        where unbuilt_loads.target_table = {{ raw_table_name('rds', 'songs') }}
    )
{%- endmacro %}


{% macro stale_model(period) -%}
    {#- The intermediate model of the periods stale for the KPI marts of grain `period`. -#}
    {{ return(ref({'listen_date': 'int_listen_dates_stale', 'listen_hour': 'int_listen_hours_stale'}[period])) }}
{%- endmacro %}


{% macro delete_stale_periods(period) -%}
    {#-
        Pre-hook of an incremental KPI mart (incremental strategy `append`): delete its stale
        periods, read from the intermediate model of its grain (stale_model), so that each is
        deleted once, in the same transaction as its new rows; the model then appends them
        (only_stale_periods). A period whose plays all vanished goes too.
    -#}
    {%- if is_incremental() %}
        delete from {{ this }}
        where {{ period }} in (select stale.{{ period }} from {{ stale_model(period) }} as stale)
    {%- endif %}
{%- endmacro %}


{% macro only_stale_periods(period) -%}
    {#-
        The where clause of a KPI mart's import of fct_listens: on an incremental run, only
        the plays of the stale periods the pre-hook deleted (delete_stale_periods); on a full
        build, every play. The ref is taken on every run so that dbt's lineage has it.
    -#}
    {%- set stale = stale_model(period) -%}
    {%- if is_incremental() %}
        where {{ period }} in (select stale.{{ period }} from {{ stale }} as stale)
    {%- endif %}
{%- endmacro %}


{% macro built_relation(model_name) -%}
    {#-
        The relation of model `model_name` as the previous build left it, or none when it does
        not exist (or at parse time); found through the manifest (database, schema, alias), not
        ref(), for a model built after the caller. Offline (var music_elt_offline_compile,
        see is_incremental) it exists when compiling `incremental`, not when compiling `full`.
    -#}
    {%- set offline = var('music_elt_offline_compile', false) | string | lower -%}
    {%- set node = graph.nodes.get('model.' ~ project_name ~ '.' ~ model_name) if execute else none -%}
    {%- if node is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set relation = api.Relation.create(database=node.database, schema=node.schema, identifier=node.alias) -%}
    {%- if offline == 'incremental' -%}
        {{ return(relation) }}
    {%- elif offline in ('true', '1', 'yes', 'full') -%}
        {{ return(none) }}
    {%- endif -%}
    {{ return(adapter.get_relation(database=node.database, schema=node.schema, identifier=node.alias)) }}
{%- endmacro %}


{% macro raw_table_name(source_name, table_name) -%}
    {#-
        The raw table of a dbt source as the load ledger names it (`target_table`), a quoted
        literal, e.g. raw_streams.streams quoted. The sources name the raw tables; the loaders write
        the same names (loaders/warehouse/ledger.py), checked by tests/unit/test_vocabulary.py.
    -#}
    {%- set relation = source(source_name, table_name) -%}
    '{{ relation.schema }}.{{ relation.identifier }}'
{%- endmacro %}
