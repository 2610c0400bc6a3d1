with

card_countries as (

    select * from {{ ref('int_payments__card_country_activity') }}

),

alerts as (

    select * from {{ ref('fct_fraud_alerts') }}

),

card_totals as (

    select
        card_id,
        min(first_seen_at) as first_seen_at,
        max(last_seen_at) as last_seen_at,
        cast(sum(txn_count) as bigint) as txn_count,
        cast(sum(amount_sum) as decimal(18, 2)) as amount_sum

    from card_countries
    group by card_id

),

home_countries as (

    -- the most frequent country; a tie goes to the first country code
    select
        card_id,
        country_code as home_country_code

    from card_countries
    qualify row_number() over (
        partition by card_id
        order by txn_count desc, country_code
    ) = 1

),

card_alerts as (

    select
        card_id,
        count(*) as alert_count

    from alerts
    group by card_id

),

final as (

    select
        card_totals.card_id,
        home_countries.home_country_code,
        card_totals.first_seen_at,
        card_totals.last_seen_at,
        card_totals.txn_count,
        card_totals.amount_sum,
        coalesce(card_alerts.alert_count, 0) as alert_count

    from card_totals
    left join home_countries
        on card_totals.card_id = home_countries.card_id
    left join card_alerts
        on card_totals.card_id = card_alerts.card_id

)

select * from final
