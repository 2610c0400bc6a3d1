with

source as (

    select * from {{ ref('base_iot__readings') }}

),

final as (

    -- a device's retry repeats a reading at a later offset, and a replayed record (the
    -- same offset written twice) repeats it too: keep the earliest
    {{ deduplicate_readings('source') }}

)

select * from final
