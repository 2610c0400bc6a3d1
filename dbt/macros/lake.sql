{#-
    Reading the Delta lake.

    A lake dataset is a dbt source whose relation is a delta_scan() of the dataset's
    Delta table (see models/staging/payments/_payments__sources.yml). delta_scan fails
    when the table does not exist, and a fresh platform has none until the flow
    commits its first micro-batch (alerts may stay absent for long). So staging models
    select from lake_source(), which is the source itself once the table exists, and
    until then an empty relation with the source's declared columns and types.
-#}

{% macro lake_source(source_name, table_name) -%}
    {%- if execute and not lake_table_exists(source_name, table_name) -%}
        {{- return(lake_empty_relation(source_name, table_name)) -}}
    {%- endif -%}
    {{- return(source(source_name, table_name)) -}}
{%- endmacro %}


{#- The directory of a lake table: <lake_dir>/<domain>/<dataset> (the domain is the source). -#}
{% macro lake_table_dir(source_name, table_name) -%}
    {{- return(lake_dir(source_name, table_name) ~ '/' ~ source_name ~ '/' ~ table_name) -}}
{%- endmacro %}


{#- Whether a lake table exists: its Delta log has an entry (a listing, nothing opened). -#}
{% macro lake_table_exists(source_name, table_name) -%}
    {%- set log = lake_table_dir(source_name, table_name) ~ '/_delta_log/*' -%}
    {%- set found = run_query("select count(*) from glob('" ~ log | replace("'", "''") ~ "')") -%}
    {{- return(found.columns[0].values()[0] > 0) -}}
{%- endmacro %}


{#- The current version of a lake table (none without a table): the newest commit
    file of its Delta log (a listing, nothing opened). Read before the table is
    scanned, so a build that records it claims no more than it read. -#}
{% macro lake_table_version(source_name, table_name) -%}
    {%- if not execute -%}
        {{- return(none) -}}
    {%- endif -%}
    {%- set log = lake_table_dir(source_name, table_name) | replace("'", "''") ~ '/_delta_log' -%}
    {%- set query -%}
        select max(cast(regexp_extract(file, '(\d+)\.json$', 1) as bigint))
        from glob('{{ log }}/*.json')
    {%- endset -%}
    {{- return(run_query(query).columns[0].values()[0]) -}}
{%- endmacro %}


{#-
    The event_date partitions (as 'YYYY-MM-DD') of a lake table whose data changed
    after version `since_version` up to `until_version`, from the Delta log: the
    partitions of the files the commits in between added or removed. Delta data files
    are immutable, so a row inserted or updated (an upsert rewrites the file holding
    the row: remove + add) shows as a file action in its partition. Compaction also
    adds and removes files, changing no row: its partitions come back for nothing,
    never wrongly.

    none means "cannot tell, take every partition": no earlier version, a commit in
    between no longer in the log (entries expire after logRetentionDuration), or more
    than var('lake_max_commits_read') commits to read (cheaper to recompute then).
-#}
{% macro lake_changed_dates(source_name, table_name, since_version, until_version) -%}
    {%- if not execute -%}
        {{- return([]) -}}
    {%- endif -%}
    {%- if since_version is none or until_version is none or until_version < since_version -%}
        {{- return(none) -}}
    {%- endif -%}
    {%- set since, until = since_version | int, until_version | int -%}
    {%- if since == until -%}
        {{- return([]) -}}
    {%- endif -%}
    {%- if until - since > var('lake_max_commits_read') | int -%}
        {{- return(none) -}}
    {%- endif -%}
    {%- set log = lake_table_dir(source_name, table_name) | replace("'", "''") ~ '/_delta_log' -%}
    {%- set commits = [] -%}
    {%- for version in range(since + 1, until + 1) -%}
        {%- do commits.append("'" ~ log ~ "/" ~ '%020d' % version ~ ".json'") -%}
    {%- endfor -%}
    {%- set present = run_query(
        "select count(*) from glob('" ~ log ~ "/*.json') where file in (" ~ commits | join(', ') ~ ")"
    ).columns[0].values()[0] -%}
    {%- if present != commits | length -%}
        {{- return(none) -}}
    {%- endif -%}
    {%- set query -%}
        with actions as (
            select coalesce(json -> '$.add', json -> '$.remove') as action
            from read_ndjson_objects([{{ commits | join(', ') }}])
        )
        select distinct coalesce(
            action ->> '$.partitionValues.event_date',
            regexp_extract(action ->> '$.path', 'event_date=([0-9]{4}-[0-9]{2}-[0-9]{2})', 1)
        ) as event_date
        from actions
        where action is not null
        order by event_date
    {%- endset -%}
    {{- return(run_query(query).columns[0].values() | list) -}}
{%- endmacro %}


{#- The root of the lake (the `lake_dir` meta of the sources; a unit test's graph has
    no sources, and then the same default answers). -#}
{% macro lake_dir(source_name='payments', table_name='transactions') -%}
    {%- if graph.sources is not defined -%}
        {{- return(var('lake_dir', env_var('RIVERBED_HOME', '.riverbed') ~ '/lake')) -}}
    {%- endif -%}
    {{- return(lake_source_node(source_name, table_name).meta['lake_dir']) -}}
{%- endmacro %}


{% macro lake_source_node(source_name, table_name) -%}
    {%- for node in graph.sources.values() -%}
        {%- if node.source_name == source_name and node.name == table_name -%}
            {{- return(node) -}}
        {%- endif -%}
    {%- endfor -%}
    {{- exceptions.raise_compiler_error("no source " ~ source_name ~ "." ~ table_name) -}}
{%- endmacro %}


{#- No rows, with the declared columns and types of the source. -#}
{% macro lake_empty_relation(source_name, table_name) -%}
    {%- set node = lake_source_node(source_name, table_name) -%}
    (
        select
            {%- for column in node.columns.values() %}
            cast(null as {{ column.data_type }}) as {{ column.name }}{{ "," if not loop.last }}
            {%- endfor %}
        limit 0
    )
{%- endmacro %}


{#- `column in ('a', 'b', ...)`, or `false` for no values. -#}
{% macro in_list(column, values) -%}
    {%- if values | length == 0 -%}
        false
    {%- else -%}
        {{ column }} in (
            {%- for value in values %}
            '{{ value | replace("'", "''") }}'{{ "," if not loop.last }}
            {%- endfor %}
        )
    {%- endif -%}
{%- endmacro %}
