with

transactions as (

    select * from {{ ref('fct_transactions') }}

),

alerts as (

    select * from {{ ref('int_payments__alerts_with_transactions') }}

),

rules as (

    select unnest({{ var('fraud_rules') }}) as rule

),

daily_transactions as (

    select
        event_date,
        count(*) as txn_count

    from transactions
    group by event_date

),

flagged_transactions as (

    -- an alerted transaction counts once per rule, whatever alerts it drew
    select distinct
        event_date,
        rule,
        transaction_id,
        amount

    from alerts

),

daily_flags as (

    select
        event_date,
        rule,
        count(*) as flagged_txn_count,
        coalesce(sum(amount), 0) as amount_at_risk

    from flagged_transactions
    group by event_date, rule

),

daily_alerts as (

    select
        event_date,
        rule,
        count(*) as alert_count

    from alerts
    group by event_date, rule

),

days as (

    select event_date from daily_transactions
    union
    select event_date from daily_alerts

),

final as (

    select
        days.event_date,
        rules.rule,
        coalesce(daily_alerts.alert_count, 0) as alert_count,
        coalesce(daily_flags.flagged_txn_count, 0) as flagged_txn_count,
        cast(coalesce(daily_flags.amount_at_risk, 0) as decimal(18, 2)) as amount_at_risk,
        coalesce(daily_transactions.txn_count, 0) as txn_count,
        coalesce(daily_flags.flagged_txn_count, 0)
            / nullif(daily_transactions.txn_count, 0) as flagged_share

    from days
    cross join rules
    left join daily_transactions
        on days.event_date = daily_transactions.event_date
    left join daily_alerts
        on days.event_date = daily_alerts.event_date
        and rules.rule = daily_alerts.rule
    left join daily_flags
        on days.event_date = daily_flags.event_date
        and rules.rule = daily_flags.rule

)

select * from final
