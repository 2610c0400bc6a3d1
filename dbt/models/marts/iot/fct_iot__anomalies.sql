{{
    config(
        materialized = 'incremental',
        unique_key = 'anomaly_id',
        incremental_strategy = 'merge',
        merge_clauses = {
            'when_matched': [{'action': 'do_nothing'}],
            'when_not_matched': [{'action': 'insert', 'mode': 'by_name'}],
        },
        on_schema_change = 'fail',
    )
}}

{#-
    Loaded like fct_transactions, by offsets (macros/offsets.sql): an anomaly carries
    the Kafka record of the reading it is about, and the flow commits a partition's
    anomalies in that record's offset order, so the rows above this table's watermarks
    are the new ones. They are deduplicated among themselves here, and against what is
    loaded by the merge, which inserts an anomaly_id only if the table lacks it.
-#}
{%- set history = ref('stg_iot__anomalies') -%}
{%- set lake_rows = ref('base_iot__anomalies') -%}

with

{% if is_incremental() %}

new_rows as (

    select * from {{ rows_above_watermarks(lake_rows, this) }}

),

anomalies as (

    {{ deduplicate_anomalies('new_rows') }}

),

{% else %}

anomalies as (

    select * from {{ history }}

),

{% endif %}

final as (

    select
        *,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as _loaded_at

    from anomalies

)

select * from final
