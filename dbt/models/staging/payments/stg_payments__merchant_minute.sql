with

source as (

    -- one row per (merchant_id, window_start): the flow upserts a window corrected by
    -- late events, so there is nothing to deduplicate
    select * from {{ lake_source('payments', 'merchant_minute') }}

),

renamed as (

    select
        ----------  ids
        merchant_id,
        cast(window_start as timestamptz) as window_start,
        cast(window_end as timestamptz) as window_end,

        ----------  measures
        cast(txn_count as bigint) as txn_count,
        cast(amount_sum as decimal(18, 2)) as amount_sum,
        cast(amount_min as decimal(18, 2)) as amount_min,
        cast(amount_max as decimal(18, 2)) as amount_max,
        cast(amount_mean as double) as amount_mean,
        cast(distinct_cards as bigint) as distinct_cards,
        cast(alert_count as bigint) as alert_count,

        ----------  the lake partition (a filter on it skips every other partition)
        cast(event_date as date) as event_date

    from source

),

final as (

    select * from renamed

)

select * from final
