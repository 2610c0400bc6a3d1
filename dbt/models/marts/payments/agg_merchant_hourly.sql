{{
    config(
        materialized = 'incremental',
        unique_key = 'event_date',
        incremental_strategy = 'delete+insert',
        on_schema_change = 'fail',
    )
}}

{#-
    Incremental by partition: an incremental build recomputes the event_date partitions
    that hold a merchant_minute file the last build did not read (a window written
    again after late events lands in its own date's partition), and replaces those
    dates' rows (delete+insert on event_date). Every hour lies in one UTC date.
-#}
{%- set listed_at = modules.datetime.datetime.now(modules.pytz.utc).isoformat() -%}

with

merchant_minutes as (

    select * from {{ ref('stg_payments__merchant_minute') }}
    {% if is_incremental() -%}
    {%- set changed_dates = lake_changed_partitions('payments', 'merchant_minute', this) %}
    -- {{ changed_dates | length }} changed partition(s)
    where {{ in_list('event_date', changed_dates) }}
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
        cast('{{ listed_at }}' as timestamptz) as _lake_listed_at

    from merchant_minutes
    group by merchant_id, date_trunc('hour', window_start), event_date

)

select * from final
