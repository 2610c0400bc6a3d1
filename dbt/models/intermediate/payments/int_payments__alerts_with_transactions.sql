with

alerts as (

    select * from {{ ref('fct_fraud_alerts') }}

),

transactions as (

    select * from {{ ref('fct_transactions') }}

),

final as (

    select
        ----------  ids
        alerts.alert_id,
        alerts.rule,
        alerts.transaction_id,
        alerts.card_id,
        transactions.merchant_id,

        ----------  the alerted transaction
        transactions.amount,
        transactions.currency_code,

        ----------  time: the transaction's, or the alert's copy of it
        coalesce(transactions.event_time, alerts.event_time) as event_time,
        coalesce(transactions.event_date, alerts.event_date) as event_date,
        alerts.detected_at,
        alerts.score

    from alerts
    left join transactions
        on alerts.transaction_id = transactions.transaction_id

)

select * from final
