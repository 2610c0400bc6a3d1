{{
    config(
        materialized = 'incremental',
        unique_key = 'alert_id',
        incremental_strategy = 'merge',
        merge_clauses = {
            'when_matched': [{'action': 'do_nothing'}],
            'when_not_matched': [{'action': 'insert', 'mode': 'by_name'}],
        },
        on_schema_change = 'fail',
    )
}}

{#-
    Loaded like fct_transactions, by offsets: an alert carries the Kafka record of the
    transaction that triggered it, and the flow commits a partition's alerts in that
    record's offset order. One more bound: only alerts whose transaction's offset is at
    or below fct_transactions' watermark of its partition. The lake's alerts and
    transactions are two tables, committed separately, read at two moments; without
    the bound, a build could load an alert whose transaction was committed after
    fct_transactions read the lake. Such an alert waits for the next build (it stays
    above this table's watermark).
-#}
{%- set transactions = ref('fct_transactions') -%}
{%- set history = ref('stg_payments__alerts') -%}
{%- set lake_rows = ref('base_payments__alerts') -%}

with

{% if is_incremental() %}

new_rows as (

    select * from {{ rows_above_watermarks(lake_rows, this, transactions) }}

),

alerts as (

    {{ deduplicate_alerts('new_rows') }}

),

{% else %}

alerts as (

    select staged.*
    from {{ history }} as staged
    semi join ({{ offset_watermarks(transactions) }}) as loaded
        on staged._topic = loaded._topic
        and staged._partition = loaded._partition
        and staged._offset <= loaded._watermark

),

{% endif %}

final as (

    select
        *,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as _loaded_at

    from alerts

)

select * from final
