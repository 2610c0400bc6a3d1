with

transactions as (

    select * from {{ ref('fct_transactions') }}

),

final as (

    -- the cards' activity per country: one pass over the transactions that gives
    -- dim_cards both its totals (rolled up) and the home country (the largest count)
    select
        card_id,
        country_code,
        count(*) as txn_count,
        sum(amount) as amount_sum,
        min(event_time) as first_seen_at,
        max(event_time) as last_seen_at

    from transactions
    group by card_id, country_code

)

select * from final
