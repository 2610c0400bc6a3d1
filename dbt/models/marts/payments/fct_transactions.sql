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
    Incremental build: only the lake files not read yet (see lake_unloaded_files). The
    staging model cannot serve that: its dedup looks at the whole lake (which keys
    repeat), so a filter on top of it cannot prune files. The new files are read
    through the base model instead, where the _file filter prunes every other file
    before DuckDB opens it; they are deduplicated among themselves here, and against
    what is loaded by the merge, which inserts a transaction_id only if the table does
    not have it yet and never touches a loaded row.
-#}
{%- set listed_at = modules.datetime.datetime.now(modules.pytz.utc).isoformat() -%}
{%- set history = ref('stg_payments__transactions') -%}
{%- set lake_rows = ref('base_payments__transactions') -%}

with

{% if is_incremental() %}

{%- set new_files = lake_unloaded_files('payments', 'transactions', this) %}

new_rows as (

    -- {{ new_files | length }} new lake file(s)
    select * from {{ lake_rows }}
    where {{ in_list('_file', new_files) }}

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
        -- every file committed before this instant was listed by the run that loaded the row
        cast('{{ listed_at }}' as timestamptz) as _lake_listed_at

    from transactions

)

select * from final
