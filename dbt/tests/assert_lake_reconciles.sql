-- The warehouse reconciles with the lake: every distinct transaction_id of the lake's
-- transactions table (all valid: invalid events go to the DLQ, not the lake) is in
-- fct_transactions exactly once, and fct_transactions holds no transaction the lake
-- does not have.
--
-- Checked: the lake's records at or below fct_transactions' offset watermark of their
-- partition. Those the last build must have loaded (the flow commits a partition's
-- records in offset order); records above it were committed after that build read
-- the lake, and are the next build's. Returns one row per problem.

with

transactions as (

    select * from {{ ref('fct_transactions') }}

),

watermarks as (

    {{ offset_watermarks(ref('fct_transactions')) }}

),

lake_rows as (

    select lake_rows.transaction_id
    from {{ ref('base_payments__transactions') }} as lake_rows
    semi join watermarks
        on lake_rows._topic = watermarks._topic
        and lake_rows._partition = watermarks._partition
        and lake_rows._offset <= watermarks._watermark

),

missing_transactions as (

    select distinct transaction_id from lake_rows
    anti join transactions using (transaction_id)

),

unknown_transactions as (

    select transaction_id from transactions
    anti join (select transaction_id from {{ ref('base_payments__transactions') }}) as lake
        using (transaction_id)

),

repeated_transactions as (

    select
        transaction_id,
        count(*) as times_loaded

    from transactions
    group by transaction_id
    having count(*) > 1

),

problems as (

    select
        'lake transaction not in fct_transactions' as problem,
        transaction_id as subject,
        null as detail

    from missing_transactions

    union all

    select
        'fct_transactions transaction not in the lake' as problem,
        transaction_id as subject,
        null as detail

    from unknown_transactions

    union all

    select
        'transaction in fct_transactions more than once' as problem,
        transaction_id as subject,
        'loaded ' || times_loaded || ' times' as detail

    from repeated_transactions

)

select * from problems
