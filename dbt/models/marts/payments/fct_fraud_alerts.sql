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

{#- Loaded like fct_transactions: the whole lake on a full build, new files after. -#}
{%- set listed_at = modules.datetime.datetime.now(modules.pytz.utc).isoformat() -%}
{%- set history = ref('stg_payments__alerts') -%}
{%- set lake_rows = ref('base_payments__alerts') -%}

with

{% if is_incremental() %}

{%- set new_files = lake_unloaded_files('payments', 'alerts', this) %}

new_rows as (

    -- {{ new_files | length }} new lake file(s)
    select * from {{ lake_rows }}
    where {{ in_list('_file', new_files) }}

),

alerts as (

    {{ deduplicate_alerts('new_rows') }}

),

{% else %}

alerts as (

    select * from {{ history }}

),

{% endif %}

final as (

    select
        *,
        cast('{{ listed_at }}' as timestamptz) as _lake_listed_at

    from alerts

)

select * from final
