{{
    config(
        materialized = 'incremental',
        unique_key = 'event_date',
        incremental_strategy = 'delete+insert',
        on_schema_change = 'fail',
    )
}}

{#-
    Incremental by partition, as fct_iot__device_hourly (see there), over the lake's
    room_state: the dates it changed since `_lake_version` are recomputed whole.
-#}
{%- set lake_version = lake_table_version('iot', 'room_state') -%}

with

records as (

    select * from {{ ref('base_iot__room_state') }}
    {{ where_lake_dates_changed('iot', 'room_state', lake_version) }}

),

room_states as (

    {{ deduplicate_readings('records') }}

),

final as (

    select
        room_id,
        -- UTC hours: the profile sets the session time zone to UTC
        date_trunc('hour', event_time) as hour_start,
        date_trunc('hour', event_time) + interval 1 hour as hour_end,
        event_date,
        count(*) as room_state_count,
        count(*) filter (where is_occupied) as occupied_count,
        count(*) filter (where is_occupied) / count(*) as occupied_share,
        avg(co2_ppm) as co2_ppm_mean,
        avg(light_lux) as light_lux_mean,
        count(light_lux) as light_matched_count,
        cast({{ lake_version if lake_version is not none else 'null' }} as bigint) as _lake_version

    from room_states
    group by room_id, date_trunc('hour', event_time), event_date

)

select * from final
