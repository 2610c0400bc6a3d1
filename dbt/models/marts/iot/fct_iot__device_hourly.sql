{{
    config(
        materialized = 'incremental',
        unique_key = 'event_date',
        incremental_strategy = 'delete+insert',
        on_schema_change = 'fail',
    )
}}

{#-
    Incremental by partition, as agg_merchant_hourly: a build recomputes whole the
    event_dates whose readings the Delta log says changed since the version the last
    build read (`_lake_version`), and replaces their rows (macros/iot.sql:
    where_lake_dates_changed). The readings are deduplicated after that filter, not
    before: a retry repeats a reading with its event time, so every copy of a reading
    lies in one date, and the dedup reads only the changed dates.
-#}
{%- set lake_version = lake_table_version('iot', 'readings') -%}

with

records as (

    select * from {{ ref('base_iot__readings') }}
    {{ where_lake_dates_changed('iot', 'readings', lake_version) }}

),

readings as (

    {{ deduplicate_readings('records') }}

),

final as (

    select
        device_id,
        -- UTC hours: the profile sets the session time zone to UTC
        date_trunc('hour', event_time) as hour_start,
        date_trunc('hour', event_time) + interval 1 hour as hour_end,
        event_date,
        -- a device moved in the hour counts for the room of its last reading there
        arg_max(room_id, event_time) as room_id,
        count(*) as reading_count,
        count(*) filter (where is_late) as late_reading_count,
        count(distinct date_trunc('minute', event_time)) as active_minutes,
        min(event_time) as first_reading_at,
        max(event_time) as last_reading_at,

        count(temperature_c) as temperature_c_count,
        avg(temperature_c) as temperature_c_mean,
        min(temperature_c) as temperature_c_min,
        max(temperature_c) as temperature_c_max,

        count(humidity_pct) as humidity_pct_count,
        avg(humidity_pct) as humidity_pct_mean,
        min(humidity_pct) as humidity_pct_min,
        max(humidity_pct) as humidity_pct_max,

        count(light_lux) as light_lux_count,
        avg(light_lux) as light_lux_mean,
        min(light_lux) as light_lux_min,
        max(light_lux) as light_lux_max,

        count(co2_ppm) as co2_ppm_count,
        avg(co2_ppm) as co2_ppm_mean,
        min(co2_ppm) as co2_ppm_min,
        max(co2_ppm) as co2_ppm_max,

        cast({{ lake_version if lake_version is not none else 'null' }} as bigint) as _lake_version

    from readings
    group by device_id, date_trunc('hour', event_time), event_date

)

select * from final
