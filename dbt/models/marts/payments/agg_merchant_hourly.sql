{{
    config(
        materialized = 'incremental',
        unique_key = 'event_date',
        incremental_strategy = 'delete+insert',
        on_schema_change = 'fail',
    )
}}

{#-
    Incremental by partition. merchant_minute is upserted (a window corrected by late
    events is updated in place, in its own event_date partition) and Delta keeps no
    per-row change time, so "what changed" comes from the table's log: each row records
    the merchant_minute table version it was computed from (`_lake_version`, read
    before the table is scanned); a build reads the Delta log's commits since the last
    build's version and takes the event_date partitions of the files they added or
    removed (files are immutable: an insert or an update adds a file, an update
    removes the old one; see macros/lake.sql: lake_changed_dates), recomputes those
    dates whole from the lake and replaces their rows (delete+insert on event_date;
    every hour lies in one UTC date). Compaction changes files, not
    rows: its dates are recomputed for nothing, never wrongly. When the history cannot
    tell (no earlier version, or its log entries expired), every date is recomputed.
-#}
{%- set lake_version = lake_table_version('payments', 'merchant_minute') -%}

with

merchant_minutes as (

    select * from {{ ref('stg_payments__merchant_minute') }}
    {% if is_incremental() -%}
    {%- set since = run_query("select max(_lake_version) from " ~ this).columns[0].values()[0] if execute else none -%}
    {%- set changed_dates = lake_changed_dates('payments', 'merchant_minute', since, lake_version) -%}
    {%- if changed_dates is none %}
    -- versions {{ since }} to {{ lake_version }}: history unknown, every date
    {%- else %}
    -- versions {{ since }} to {{ lake_version }}: {{ changed_dates | length }} changed date(s)
    where {{ in_list('event_date', changed_dates) }}
    {%- endif %}
    {%- endif %}

),

final as (

    select
        merchant_id,
        -- UTC hours: the profile sets the session time zone to UTC
        date_trunc('hour', window_start) as hour_start,
        date_trunc('hour', window_start) + interval 1 hour as hour_end,
        event_date,
        count(*) as active_minutes,
        cast(sum(txn_count) as bigint) as txn_count,
        cast(sum(amount_sum) as decimal(18, 2)) as amount_sum,
        min(amount_min) as amount_min,
        max(amount_max) as amount_max,
        sum(amount_mean * txn_count) / nullif(sum(txn_count), 0) as amount_mean,
        max(distinct_cards) as peak_minute_distinct_cards,
        cast(sum(alert_count) as bigint) as alert_count,
        cast({{ lake_version if lake_version is not none else 'null' }} as bigint) as _lake_version

    from merchant_minutes
    group by merchant_id, date_trunc('hour', window_start), event_date

)

select * from final
