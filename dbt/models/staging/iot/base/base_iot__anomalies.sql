with

source as (

    select * from {{ lake_source('iot', 'anomalies') }}

),

renamed as (

    select
        ----------  ids
        anomaly_id,
        reading_id,
        device_id,
        room_id,

        ----------  properties
        rule,
        metric,
        cast(value as double) as value,
        cast(score as double) as score,
        details,

        ----------  time
        cast(event_time as timestamptz) as event_time,
        cast(detected_at as timestamptz) as detected_at,
        cast(event_date as date) as event_date,

        ----------  lineage: the reading's Kafka record
        _topic,
        cast(_partition as integer) as _partition,
        cast(_offset as bigint) as _offset

    from source

),

final as (

    select * from renamed

)

select * from final
