-- The warehouse reconciles with the lake manifest: every file the manifest lists as
-- committed is in the lake with the rows the manifest says, and every transaction in
-- those files is in fct_transactions exactly once (by transaction_id).
--
-- Checked: the files committed before the last build listed the lake (a file committed
-- since is the next build's). Returns one row per problem.

with

manifest as (

    select * from {{ lake_manifest('transactions') }}

),

transactions as (

    select * from {{ ref('fct_transactions') }}

),

lake_rows as (

    select * from {{ ref('base_payments__transactions') }}

),

committed_files as (

    {{ lake_files_read_before('transactions', 'payments', ref('fct_transactions')) }}

),

committed_rows as (

    select distinct
        manifest.path as _file,
        manifest.rows

    from manifest
    semi join committed_files
        on manifest.path = committed_files._file

),

file_rows as (

    -- row counts from the Parquet footers: no data read
    select * from {{ lake_file_rows(source('payments', 'transactions')) }}

),

missing_transactions as (

    select lake_rows.transaction_id

    from lake_rows
    semi join committed_files
        on lake_rows._file = committed_files._file
    anti join transactions
        on lake_rows.transaction_id = transactions.transaction_id

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
        'committed file missing or not as the manifest says' as problem,
        committed_rows._file as subject,
        'manifest: ' || committed_rows.rows || ' rows, lake file: '
            || coalesce(cast(file_rows.rows as varchar), 'none') as detail

    from committed_rows
    left join file_rows
        on committed_rows._file = file_rows._file
    where file_rows.rows is distinct from committed_rows.rows

    union all

    select distinct
        'committed transaction not in fct_transactions' as problem,
        transaction_id as subject,
        null as detail

    from missing_transactions

    union all

    select
        'transaction in fct_transactions more than once' as problem,
        transaction_id as subject,
        'loaded ' || times_loaded || ' times' as detail

    from repeated_transactions

)

select * from problems
