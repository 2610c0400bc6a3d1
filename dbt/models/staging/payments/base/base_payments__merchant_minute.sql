with

source as (

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
        {% if lake_has_column(source('payments', 'merchant_minute'), 'revision') -%}
        cast(coalesce(revision, 0) as integer) as revision,
        {%- else -%}
        cast(0 as integer) as revision,
        {%- endif %}

        ----------  lineage: the lake partition and file
        cast(event_date as date) as event_date,
        {{ lake_relative_path('filename') }} as _file

    from source

),

final as (

    select * from renamed

)

select * from final
