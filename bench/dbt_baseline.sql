-- The baseline of bench/dbt_bench.py: the dbt project's six marts as plain DuckDB SQL,
-- one script, run on a fresh database file. {lake} is replaced by the lake root.
-- Same inputs, same rules, same SQL shapes (the dedup ranks only the rows of repeated
-- keys, as dbt/macros/deduplication.sql), same results as the dbt models (the bench
-- checks it); no views, no tests, no incremental logic.

load delta;
set timezone = 'UTC';
set enable_progress_bar = false;

create view lake_transactions_view as
select
    transaction_id, card_id, merchant_id, mcc as merchant_category_code,
    cast(amount as decimal(18, 2)) as amount, currency as currency_code,
    country as country_code, lat as latitude, lon as longitude, channel,
    coalesce(late, false) as is_late, cast(event_time as timestamptz) as event_time,
    cast(event_date as date) as event_date, _topic, cast(_partition as integer) as _partition,
    cast(_offset as bigint) as _offset,
    now() as _loaded_at
from delta_scan('{lake}/payments/transactions');

create table fct_transactions as
with repeated as (
    select transaction_id from lake_transactions_view group by all having count(*) > 1
)
select * from lake_transactions_view anti join repeated using (transaction_id)
union all
(
    select * from lake_transactions_view semi join repeated using (transaction_id)
    qualify row_number() over (
        partition by transaction_id order by _offset, _partition
    ) = 1
);

create view lake_alerts_view as
select
    alert_id, transaction_id, card_id, rule, cast(score as double) as score, details,
    cast(event_time as timestamptz) as event_time,
    cast(detected_at as timestamptz) as detected_at, cast(event_date as date) as event_date,
    _topic, cast(_partition as integer) as _partition, cast(_offset as bigint) as _offset,
    now() as _loaded_at
from delta_scan('{lake}/payments/alerts');

create table fct_fraud_alerts as
with repeated as (select alert_id from lake_alerts_view group by all having count(*) > 1)
select * from lake_alerts_view anti join repeated using (alert_id)
union all
(
    select * from lake_alerts_view semi join repeated using (alert_id)
    qualify row_number() over (
        partition by alert_id order by detected_at, _partition, _offset
    ) = 1
);

create temp table alerts_with_transactions as
select
    a.alert_id, a.rule, a.transaction_id, a.card_id, t.merchant_id, t.amount,
    coalesce(t.event_date, a.event_date) as event_date
from fct_fraud_alerts a
left join fct_transactions t on a.transaction_id = t.transaction_id;

create table dim_cards as
with countries as (
    select card_id, country_code, count(*) as n, sum(amount) as amount_sum,
        min(event_time) as first_seen_at, max(event_time) as last_seen_at
    from fct_transactions group by all
),
totals as (
    select card_id, min(first_seen_at) as first_seen_at, max(last_seen_at) as last_seen_at,
        cast(sum(n) as bigint) as txn_count, cast(sum(amount_sum) as decimal(18, 2)) as amount_sum
    from countries group by card_id
),
homes as (
    select card_id, country_code as home_country_code from countries
    qualify row_number() over (partition by card_id order by n desc, country_code) = 1
),
alerts as (select card_id, count(*) as alert_count from fct_fraud_alerts group by card_id)
select t.card_id, h.home_country_code, t.first_seen_at, t.last_seen_at, t.txn_count,
    t.amount_sum, coalesce(a.alert_count, 0) as alert_count
from totals t
left join homes h using (card_id)
left join alerts a using (card_id);

create table dim_merchants as
with countries as (
    select merchant_id, country_code, count(*) as n, sum(amount) as amount_sum,
        min(event_time) as first_seen_at, max(event_time) as last_seen_at
    from fct_transactions group by all
),
totals as (
    select merchant_id, min(first_seen_at) as first_seen_at, max(last_seen_at) as last_seen_at,
        cast(sum(n) as bigint) as txn_count, cast(sum(amount_sum) as decimal(18, 2)) as amount_sum
    from countries group by merchant_id
),
homes as (
    select merchant_id, country_code as home_country_code from countries
    qualify row_number() over (partition by merchant_id order by n desc, country_code) = 1
),
alerts as (
    select merchant_id, count(*) as alert_count
    from alerts_with_transactions where merchant_id is not null group by merchant_id
)
select t.merchant_id, h.home_country_code, t.first_seen_at, t.last_seen_at, t.txn_count,
    t.amount_sum, coalesce(a.alert_count, 0) as alert_count
from totals t
left join homes h using (merchant_id)
left join alerts a using (merchant_id);

create view lake_merchant_minute_view as
select
    merchant_id, window_start, window_end, txn_count, amount_sum, amount_min, amount_max,
    amount_mean, distinct_cards, alert_count, cast(event_date as date) as event_date
from delta_scan('{lake}/payments/merchant_minute');

-- one row per window in the lake (windows are upserted): nothing to deduplicate
create table agg_merchant_hourly as
with minutes as (select * from lake_merchant_minute_view)
select
    merchant_id,
    date_trunc('hour', window_start) as hour_start,
    date_trunc('hour', window_start) + interval 1 hour as hour_end,
    event_date,
    count(*) as active_minutes,
    cast(sum(txn_count) as bigint) as txn_count,
    cast(sum(amount_sum) as decimal(18, 2)) as amount_sum,
    min(amount_min) as amount_min,
    max(amount_max) as amount_max,
    sum(amount_mean * txn_count) / nullif(sum(txn_count), 0) as amount_mean,
    max(distinct_cards) as peak_minute_distinct_cards,
    cast(sum(alert_count) as bigint) as alert_count
from minutes
group by merchant_id, date_trunc('hour', window_start), event_date;

create table fct_fraud_daily as
with rules as (
    select unnest(['velocity', 'amount_spike', 'impossible_travel', 'card_testing', 'profile_amount']) as rule
),
daily as (select event_date, count(*) as txn_count from fct_transactions group by all),
flags as (
    select event_date, rule, count(*) as flagged_txn_count,
        coalesce(sum(amount), 0) as amount_at_risk
    from (select distinct event_date, rule, transaction_id, amount from alerts_with_transactions)
    group by all
),
alerts as (
    select event_date, rule, count(*) as alert_count from alerts_with_transactions group by all
),
days as (select event_date from daily union select event_date from alerts)
select
    d.event_date, r.rule,
    coalesce(a.alert_count, 0) as alert_count,
    coalesce(f.flagged_txn_count, 0) as flagged_txn_count,
    cast(coalesce(f.amount_at_risk, 0) as decimal(18, 2)) as amount_at_risk,
    coalesce(t.txn_count, 0) as txn_count,
    coalesce(f.flagged_txn_count, 0) / nullif(t.txn_count, 0) as flagged_share
from days d
cross join rules r
left join daily t on d.event_date = t.event_date
left join alerts a on d.event_date = a.event_date and r.rule = a.rule
left join flags f on d.event_date = f.event_date and r.rule = f.rule;
