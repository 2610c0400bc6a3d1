with

source as (

    select * from {{ ref('base_iot__anomalies') }}

),

final as (

    -- anomaly ids are deterministic: a replayed record raises the same anomaly again
    {{ deduplicate_anomalies('source') }}

)

select * from final
