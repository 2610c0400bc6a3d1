{#-
    Incremental loading by Kafka offsets.

    Every row a flow writes from a topic carries its record's `_topic`, `_partition`
    and `_offset`, and the flow commits each partition's records in offset order (a
    commit records the next offset per partition, and a restarted flow resumes there).
    So per (topic, partition), the rows a table has loaded are a prefix: everything up
    to its highest `_offset` (its watermark), and a row above the watermark is new.
    Compaction rewrites files but never offsets, so this holds whatever the files are.
-#}


{#- Per (topic, partition): the highest offset `relation` holds. -#}
{% macro offset_watermarks(relation) -%}
    select _topic, _partition, max(_offset) as _watermark
    from {{ relation }}
    group by _topic, _partition
{%- endmacro %}


{#-
    The rows of `lake_rows` above `loaded`'s watermarks, optionally only those at or
    below `bound`'s watermarks (a relation whose offsets cap what may be loaded now).

    The exact test is per partition (an anti join with the watermarks). Before it, a
    literal filter lets delta_scan skip every file that holds only old rows (by the
    files' min/max statistics): `_offset > floor`, the lowest watermark, read at compile
    time. A partition with nothing loaded yet (one the topic gained, or one that never
    had a row) has no watermark: a partition numbered above every loaded one is read
    whole by a second, disjoint branch; a gap below (rare) turns the floor off.
-#}
{% macro rows_above_watermarks(lake_rows, loaded, bound=none) -%}
    {%- set floor, max_partition = -1, -1 -%}
    {#- (a dbt unit test's `this` is a CTE, not a table to query: no floor then) -#}
    {%- if execute and not (loaded | string).startswith('__dbt__cte__') -%}
        {%- set query -%}
            with watermarks as ({{ offset_watermarks(loaded) }})
            select
                case
                    when count(*) = 0 then -1
                    -- one topic, partitions 0..n-1 all loaded: the lowest watermark holds
                    when count(distinct _topic) = 1 and count(*) = max(_partition) + 1
                        then min(_watermark)
                    else -1
                end as floor,
                coalesce(max(_partition), -1) as max_partition
            from watermarks
        {%- endset -%}
        {%- set row = run_query(query).rows[0] -%}
        {%- set floor, max_partition = row[0], row[1] -%}
    {%- endif %}
    (
        with

        watermarks as (

            {{ offset_watermarks(loaded) }}

        ),

        candidates as (

            -- {{ 'everything (no usable floor)' if floor < 0 else 'offsets above ' ~ floor }}
            select * from {{ lake_rows }}
            where _offset > {{ floor }}

            union all

            -- partitions above every loaded one, below the floor
            select * from {{ lake_rows }}
            where _partition > {{ max_partition }}
                and _offset <= {{ floor }}

        )

        select candidates.*
        from candidates
        anti join watermarks
            on candidates._topic = watermarks._topic
            and candidates._partition = watermarks._partition
            and candidates._offset <= watermarks._watermark
        {%- if bound is not none %}
        semi join ({{ offset_watermarks(bound) }}) as bound
            on candidates._topic = bound._topic
            and candidates._partition = bound._partition
            and candidates._offset <= bound._watermark
        {%- endif %}
    )
{%- endmacro %}
