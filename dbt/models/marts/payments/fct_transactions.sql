{{
    config(
        materialized = 'incremental',
        unique_key = 'transaction_id',
        incremental_strategy = 'merge',
        merge_clauses = {
            'when_matched': [{'action': 'do_nothing'}],
            'when_not_matched': [{'action': 'insert', 'mode': 'by_name'}],
        },
        on_schema_change = 'fail',
    )
}}

{#-
    Full build: the whole lake, deduplicated by the staging model.
    Incremental build: only the records above what this table has loaded, per Kafka
    partition (see macros/offsets.sql): neither event time nor event_date grows (a
    late event lands in an old partition), but a partition's offsets do, and the flow
    commits them in order. The staging model cannot serve that: its dedup looks at the
    whole lake (which keys repeat), so a filter on top of it cannot skip files. The new
    records are read through the base model instead, where the offset filter lets
    delta_scan skip every file of old records; they are deduplicated among themselves
    here, and against what is loaded by the merge, which inserts a transaction_id only
    if the table does not have it yet (a resend of a loaded transaction is dropped) and
    never touches a loaded row.
-#}
{%- set history = ref('stg_payments__transactions') -%}
{%- set lake_rows = ref('base_payments__transactions') -%}

with

{% if is_incremental() %}

new_rows as (

    select * from {{ rows_above_watermarks(lake_rows, this) }}

),

transactions as (

    {{ deduplicate_transactions('new_rows') }}

),

{% else %}

transactions as (

    select * from {{ history }}

),

{% endif %}

final as (

    select
        *,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as _loaded_at

    from transactions

)

select * from final
