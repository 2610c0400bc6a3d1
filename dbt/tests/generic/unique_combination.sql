{#-
    A compound key is unique: no two rows share the values of `columns` (as
    dbt_utils.unique_combination_of_columns; grouping on the columns themselves is
    cheaper in DuckDB than the built-in unique test on a concatenated expression).
-#}
{% test unique_combination(model, columns) %}

select
    {{ columns | join(', ') }},
    count(*) as n_rows

from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}
