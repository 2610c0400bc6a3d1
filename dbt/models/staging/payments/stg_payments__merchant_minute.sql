with

source as (

    select * from {{ ref('base_payments__merchant_minute') }}

),

final as (

    -- late events make the flow write a window again, with revision + 1: the highest
    -- revision (then the fuller row, then the later file) is the current one.
    -- (event_date is window_start's date; in the key it lets a filter on event_date
    -- reach the files.)
    {{ deduplicate(
        'source',
        'event_date, merchant_id, window_start',
        'revision desc, txn_count desc, _file desc',
    ) }}

)

select * from final
