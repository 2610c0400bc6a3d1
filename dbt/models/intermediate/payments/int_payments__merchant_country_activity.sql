with

transactions as (

    select * from {{ ref('fct_transactions') }}

),

final as (

    -- the merchants' activity per country: one pass over the transactions that gives
    -- dim_merchants both its totals (rolled up) and the home country (the largest count)
    select
        merchant_id,
        country_code,
        count(*) as txn_count,
        sum(amount) as amount_sum,
        min(event_time) as first_seen_at,
        max(event_time) as last_seen_at

    from transactions
    group by merchant_id, country_code

)

select * from final
