with

source as (

    select * from {{ lake_source('iot', 'room_state') }}

),

renamed as (

    select
        ----------  ids: the CO2 reading the row is anchored on
        reading_id,
        room_id,
        device_id,

        ----------  the room's sensors, joined within the interval
        cast(co2_ppm as double) as co2_ppm,
        cast(light_lux as double) as light_lux,
        cast(humidity_pct as double) as humidity_pct,
        cast(light_lag_s as double) as light_lag_s,
        cast(humidity_lag_s as double) as humidity_lag_s,
        occupied as is_occupied,

        ----------  time
        cast(event_time as timestamptz) as event_time,
        cast(event_date as date) as event_date,

        ----------  lineage: the CO2 reading's Kafka record
        _topic,
        cast(_partition as integer) as _partition,
        cast(_offset as bigint) as _offset

    from source

),

final as (

    select * from renamed

)

select * from final
