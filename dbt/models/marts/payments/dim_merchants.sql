with

merchant_countries as (

    select * from {{ ref('int_payments__merchant_country_activity') }}

),

alerts as (

    select * from {{ ref('int_payments__alerts_with_transactions') }}

),

merchant_totals as (

    select
        merchant_id,
        min(first_seen_at) as first_seen_at,
        max(last_seen_at) as last_seen_at,
        cast(sum(txn_count) as bigint) as txn_count,
        cast(sum(amount_sum) as decimal(18, 2)) as amount_sum

    from merchant_countries
    group by merchant_id

),

home_countries as (

    -- the most frequent country; a tie goes to the first country code
    select
        merchant_id,
        country_code as home_country_code

    from merchant_countries
    qualify row_number() over (
        partition by merchant_id
        order by txn_count desc, country_code
    ) = 1

),

merchant_alerts as (

    select
        merchant_id,
        count(*) as alert_count

    from alerts
    where merchant_id is not null
    group by merchant_id

),

final as (

    select
        merchant_totals.merchant_id,
        home_countries.home_country_code,
        merchant_totals.first_seen_at,
        merchant_totals.last_seen_at,
        merchant_totals.txn_count,
        merchant_totals.amount_sum,
        coalesce(merchant_alerts.alert_count, 0) as alert_count

    from merchant_totals
    left join home_countries
        on merchant_totals.merchant_id = home_countries.merchant_id
    left join merchant_alerts
        on merchant_totals.merchant_id = merchant_alerts.merchant_id

)

select * from final
