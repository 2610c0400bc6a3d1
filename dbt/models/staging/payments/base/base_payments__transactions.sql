with

source as (

    select * from {{ lake_source('payments', 'transactions') }}

),

renamed as (

    select
        ----------  ids
        transaction_id,
        card_id,
        merchant_id,

        ----------  properties
        mcc as merchant_category_code,
        cast(amount as decimal(18, 2)) as amount,
        currency as currency_code,
        country as country_code,
        lat as latitude,
        lon as longitude,
        channel,
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
