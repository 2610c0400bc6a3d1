with

source as (

    select * from {{ ref('base_payments__alerts') }}

),

final as (

    -- alert ids are deterministic: a replayed record raises the same alert again
    {{ deduplicate_alerts('source') }}

)

select * from final
