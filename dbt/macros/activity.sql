{#-
    Activity per (`key`, country): transactions, amount, first and last event time.

    An incremental table, maintained additively: a build reads only the rows
    fct_transactions loaded since the last one (its `_loaded_at`, the time of the
    build that inserted them; fct_transactions only ever inserts), aggregates them
    per key and country, adds each group to the stored one (counts and sums add up;
    first and last take the earlier and later), and replaces those groups
    (delete+insert). So a build costs what was loaded, not the whole history, and the
    dimensions above read a table of a few rows per card or merchant.
    `_loaded_through` records the newest `_loaded_at` a group has absorbed; the
    table's maximum is where the next build starts.

    A full refresh of fct_transactions alone gives every row a new `_loaded_at`,
    newer than anything this table absorbed: the build sees that (the facts' oldest
    load is newer than this table's newest) and recomputes every group from the facts
    instead of adding them all again.
-#}
{% macro country_activity(key) -%}
{{
    config(
        materialized = 'incremental',
        unique_key = [key, 'country_code'],
        incremental_strategy = 'delete+insert',
        on_schema_change = 'fail',
    )
}}

{%- set add_to_stored = is_incremental() -%}
{%- if add_to_stored and execute -%}
    {%- set facts_rebuilt -%}
        select
            (select min(_loaded_at) from {{ ref('fct_transactions') }})
            > (select max(_loaded_through) from {{ this }})
    {%- endset -%}
    {%- set add_to_stored = run_query(facts_rebuilt).rows[0][0] is not true -%}
{%- endif %}

with

transactions as (

    select * from {{ ref('fct_transactions') }}
    {%- if add_to_stored %}
    where _loaded_at > (
        select coalesce(max(_loaded_through), '-infinity'::timestamptz) from {{ this }}
    )
    {%- endif %}

),

loaded as (

    select
        {{ key }},
        country_code,
        count(*) as txn_count,
        sum(amount) as amount_sum,
        min(event_time) as first_seen_at,
        max(event_time) as last_seen_at,
        max(_loaded_at) as _loaded_through

    from transactions
    group by {{ key }}, country_code

),

{%- if add_to_stored %}

final as (

    select
        loaded.{{ key }},
        loaded.country_code,
        loaded.txn_count + coalesce(stored.txn_count, 0) as txn_count,
        loaded.amount_sum + coalesce(stored.amount_sum, 0) as amount_sum,
        least(loaded.first_seen_at, coalesce(stored.first_seen_at, loaded.first_seen_at))
            as first_seen_at,
        greatest(loaded.last_seen_at, coalesce(stored.last_seen_at, loaded.last_seen_at))
            as last_seen_at,
        loaded._loaded_through

    from loaded
    left join {{ this }} as stored
        on loaded.{{ key }} = stored.{{ key }}
        and loaded.country_code = stored.country_code

)

{%- else %}

final as (

    select * from loaded

)

{%- endif %}

select * from final
{%- endmacro %}
