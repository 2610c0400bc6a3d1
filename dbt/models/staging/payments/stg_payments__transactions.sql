with

source as (

    select * from {{ ref('base_payments__transactions') }}

),

final as (

    -- a producer resend repeats a transaction at a later offset, and a replayed record
    -- (the same offset written twice) repeats it too: keep the earliest
    {{ deduplicate_transactions('source') }}

)

select * from final
