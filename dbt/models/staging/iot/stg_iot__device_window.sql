with

source as (

    -- one row per (device_id, window_start): the flow upserts a window corrected by
    -- late readings, so there is nothing to deduplicate
    select * from {{ lake_source('iot', 'device_window') }}

),

renamed as (

    select
        ----------  ids
        device_id,
        room_id,
        cast(window_start as timestamptz) as window_start,
        cast(window_end as timestamptz) as window_end,

        ----------  measures: per measurement, its readings' count, mean, min and max
        cast(reading_count as bigint) as reading_count,
        cast(temperature_c_count as bigint) as temperature_c_count,
        cast(temperature_c_mean as double) as temperature_c_mean,
        cast(temperature_c_min as double) as temperature_c_min,
        cast(temperature_c_max as double) as temperature_c_max,
        cast(humidity_pct_count as bigint) as humidity_pct_count,
        cast(humidity_pct_mean as double) as humidity_pct_mean,
        cast(humidity_pct_min as double) as humidity_pct_min,
        cast(humidity_pct_max as double) as humidity_pct_max,
        cast(light_lux_count as bigint) as light_lux_count,
        cast(light_lux_mean as double) as light_lux_mean,
        cast(light_lux_min as double) as light_lux_min,
        cast(light_lux_max as double) as light_lux_max,
        cast(co2_ppm_count as bigint) as co2_ppm_count,
        cast(co2_ppm_mean as double) as co2_ppm_mean,
        cast(co2_ppm_min as double) as co2_ppm_min,
        cast(co2_ppm_max as double) as co2_ppm_max,

        ----------  the lake partition (a filter on it skips every other partition)
        cast(event_date as date) as event_date

    from source

),

final as (

    select * from renamed

)

select * from final
