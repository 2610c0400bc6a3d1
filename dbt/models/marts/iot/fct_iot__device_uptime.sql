with

device_hours as (

    select * from {{ ref('fct_iot__device_hourly') }}

),

lake_newest as (

    -- the newest reading of any device: "now" in event time, so a device that went
    -- silent shows hours of zero up to it, and the hour it falls in is only counted
    -- up to its minute
    select max(last_reading_at) as newest_reading_at

    from device_hours

),

device_spans as (

    select
        device_id,
        min(hour_start) as first_hour_start

    from device_hours
    group by device_id

),

hours as (

    select
        device_spans.device_id,
        unnest(generate_series(
            device_spans.first_hour_start,
            date_trunc('hour', lake_newest.newest_reading_at),
            interval 1 hour
        )) as hour_start

    from device_spans
    cross join lake_newest

),

observed_hours as (

    select
        hours.device_id,
        hours.hour_start,
        case
            when hours.hour_start = date_trunc('hour', lake_newest.newest_reading_at)
                then cast(extract(minute from lake_newest.newest_reading_at) as bigint) + 1
            else 60
        end as observed_minutes

    from hours
    cross join lake_newest

),

final as (

    select
        observed_hours.device_id,
        observed_hours.hour_start,
        observed_hours.hour_start + interval 1 hour as hour_end,
        cast(observed_hours.hour_start as date) as event_date,
        coalesce(device_hours.active_minutes, 0) as active_minutes,
        observed_hours.observed_minutes,
        coalesce(device_hours.active_minutes, 0) / observed_hours.observed_minutes
            as uptime_share

    from observed_hours
    left join device_hours
        on observed_hours.device_id = device_hours.device_id
        and observed_hours.hour_start = device_hours.hour_start

)

select * from final
