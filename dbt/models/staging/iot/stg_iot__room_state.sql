with

source as (

    select * from {{ ref('base_iot__room_state') }}

),

final as (

    -- one row per CO2 reading: a replayed record would join the same reading again
    {{ deduplicate_readings('source') }}

)

select * from final
