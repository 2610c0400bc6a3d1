with

source as (

    select * from {{ lake_source('iot', 'readings') }}

),

renamed as (

    select
        ----------  ids
        reading_id,
        device_id,
        room_id,

        ----------  measurements (null: the device does not measure it)
        cast(temperature_c as double) as temperature_c,
        cast(humidity_pct as double) as humidity_pct,
        cast(light_lux as double) as light_lux,
        cast(co2_ppm as double) as co2_ppm,
        coalesce(late, false) as is_late,

        ----------  time
        cast(event_time as timestamptz) as event_time,
        cast(event_date as date) as event_date,

        ----------  lineage: the Kafka record
        _topic,
        cast(_partition as integer) as _partition,
        cast(_offset as bigint) as _offset

    from source

),

final as (

    select * from renamed

)

select * from final
