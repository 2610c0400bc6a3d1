{#-
    The IoT domain's replay rules and its incremental-by-partition filter.

    As for payments (macros/deduplication.sql), the replay rules are shared by the
    staging models (over the whole lake) and the marts (over the rows a build reads),
    so both keep the same row.
-#}

{#- One row per reading_id: the earliest Kafka record (a device's retry comes later, and
    a replayed record repeats it). Room states too are one per (CO2) reading. -#}
{% macro deduplicate_readings(relation) -%}
    {{ deduplicate(relation, 'reading_id', '_offset, _partition') }}
{%- endmacro %}


{#- One row per anomaly_id (ids are deterministic; a replayed record repeats one):
    the first detected. -#}
{% macro deduplicate_anomalies(relation) -%}
    {{ deduplicate(relation, 'anomaly_id', 'detected_at, _partition, _offset') }}
{%- endmacro %}


{#-
    Incremental by partition, as agg_merchant_hourly is (see there): in an incremental
    build, a `where` keeping only the event_date partitions of `table_name` whose files
    the Delta log's commits since the target's `_lake_version` added or removed (every
    date, no clause, when the log cannot tell); nothing in a full build. The model
    records `lake_version` (read with lake_table_version before the scan) in
    `_lake_version` and replaces whole dates (delete+insert on event_date).
-#}
{% macro where_lake_dates_changed(source_name, table_name, lake_version) -%}
    {%- if is_incremental() -%}
        {%- set since = run_query("select max(_lake_version) from " ~ this).columns[0].values()[0] if execute else none -%}
        {%- set changed_dates = lake_changed_dates(source_name, table_name, since, lake_version) -%}
        {%- if changed_dates is none %}
    -- versions {{ since }} to {{ lake_version }}: history unknown, every date
        {%- else %}
    -- versions {{ since }} to {{ lake_version }}: {{ changed_dates | length }} changed date(s)
    where {{ in_list('event_date', changed_dates) }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
