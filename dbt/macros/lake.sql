{#-
    Reading the Parquet lake.

    A lake dataset is a dbt source whose relation is a read_parquet() over the dataset's
    files (see models/staging/payments/_payments__sources.yml). DuckDB's read_parquet
    fails when a glob matches no file, and a fresh platform has none until the flow
    flushes its first micro-batch (alerts may stay empty for long). So staging models
    select from lake_source(), which is the source itself once the dataset has a file,
    and until then an empty relation with the source's declared columns and types.
-#}

{% macro lake_source(source_name, table_name) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- if execute and lake_files(relation) | length == 0 -%}
        {{- return(lake_empty_relation(source_name, table_name)) -}}
    {%- endif -%}
    {{- return(relation) -}}
{%- endmacro %}


{#- The file glob of a lake source: the first argument of its read_parquet(). -#}
{% macro lake_glob(relation) -%}
    {%- if not execute -%}
        {{- return('') -}}
    {%- endif -%}
    {%- set match = modules.re.search("read_parquet\\(\\s*'([^']+)'", relation.render()) -%}
    {%- if not match -%}
        {{- exceptions.raise_compiler_error(
            "lake source " ~ relation ~ " is not a read_parquet('<glob>', ...) relation") -}}
    {%- endif -%}
    {{- return(match.group(1)) -}}
{%- endmacro %}


{#- The files a lake source reads now (full paths as read_parquet's filename gives them). -#}
{% macro lake_files(relation) -%}
    {%- set result = run_query("select file from glob('" ~ lake_glob(relation) ~ "') order by file") -%}
    {{- return(result.columns[0].values() | list) -}}
{%- endmacro %}


{#- Whether the lake's files of a source have `column` (an optional column added to
    the contract later): the newest file (by path) answers, only its footer is read.
    While the dataset has no file, the declared columns answer. -#}
{% macro lake_has_column(relation, column) -%}
    {%- if not execute -%}
        {{- return(false) -}}
    {%- endif -%}
    {%- set files = lake_files(relation) -%}
    {%- if files | length == 0 -%}
        {{- return(true) -}}
    {%- endif -%}
    {%- set query -%}
        select count(*) from parquet_schema('{{ files[-1] }}') where name = '{{ column }}'
    {%- endset -%}
    {{- return(run_query(query).columns[0].values()[0] > 0) -}}
{%- endmacro %}


{#- Rows per file of a lake source, from the Parquet footers (no data read): file is
    the path relative to the lake root. No files: no rows. -#}
{% macro lake_file_rows(relation) -%}
    {%- if execute and lake_files(relation) | length > 0 -%}
    (
        select
            {{ lake_relative_path('file_name') }} as _file,
            any_value(num_rows) as rows
        from parquet_file_metadata('{{ lake_glob(relation) }}')
        group by file_name
    )
    {%- else -%}
    (select cast(null as varchar) as _file, cast(null as bigint) as rows limit 0)
    {%- endif -%}
{%- endmacro %}


{#- The root of the lake (the `lake_dir` meta of the sources). -#}
{% macro lake_dir(source_name='payments', table_name='transactions') -%}
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


{#- No rows, with the declared columns of the source, and read_parquet's `filename`. -#}
{% macro lake_empty_relation(source_name, table_name) -%}
    {%- set node = lake_source_node(source_name, table_name) -%}
    (
        select
            {%- for column in node.columns.values() %}
            cast(null as {{ column.data_type }}) as {{ column.name }},
            {%- endfor %}
            cast(null as varchar) as filename
        limit 0
    )
{%- endmacro %}


{#- A lake file's path relative to the lake root, as the manifest names it:
    payments/<dataset>/event_date=YYYY-MM-DD/<name>.parquet -#}
{% macro lake_relative_path(column) -%}
    regexp_extract({{ column }}, '[^/]+/[^/]+/event_date=[^/]+/[^/]+$')
{%- endmacro %}


{#-
    The files of a lake source that an incremental run of `loaded_relation` has to read
    (relative paths, sorted). Listing the lake is a glob: no file is opened. A file is
    done when the target holds a row from it, or when the manifest says it was committed
    before the last listing that loaded rows (its rows were read then, and those not in
    the target were duplicates: a file of resends, or a batch the flow wrote again after
    a crash). Without the second rule such a file would be read again on every run.
    Relies on the writer stamping committed_at after the rename, and on clocks agreeing
    within var('lake_clock_skew_seconds').
-#}
{% macro lake_unloaded_files(source_name, table_name, loaded_relation) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- if not execute -%}
        {{- return([]) -}}
    {%- endif -%}
    {%- set query -%}
        with

        lake_files as (
            select {{ lake_relative_path('file') }} as _file
            from glob('{{ lake_glob(relation) }}')
        ),

        loaded_files as (
            -- distinct over the column is cheap (dictionary-encoded); a set
            -- difference against all its rows would hash every one
            select distinct _file from {{ loaded_relation }}
        ),

        read_before as (
            {{ lake_files_read_before(table_name, source_name, loaded_relation) }}
        )

        select _file from lake_files
        anti join loaded_files using (_file)
        anti join read_before using (_file)
        order by _file
    {%- endset -%}
    {{- return(run_query(query).columns[0].values() | list) -}}
{%- endmacro %}


{#-
    The files the manifest shows as committed before the last listing of the lake
    that loaded rows into `loaded_relation` (its max `_lake_listed_at`): that listing,
    or an earlier one, saw them. The margin var('lake_clock_skew_seconds') allows for
    the writer's clock being ahead of dbt's.
-#}
{% macro lake_files_read_before(dataset, source_name, loaded_relation) -%}
    select manifest.path as _file
    from {{ lake_manifest(dataset, source_name) }} as manifest
    where manifest.committed_at < (
        select max(_lake_listed_at) - to_seconds({{ var('lake_clock_skew_seconds') }})
        from {{ loaded_relation }}
    )
{%- endmacro %}


{#-
    The event_date partitions of a lake source holding a file that was not read by
    the last listing that loaded `loaded_relation` (see lake_files_read_before): the
    partitions an aggregate over the source has to recompute. Dates as 'YYYY-MM-DD'.
-#}
{% macro lake_changed_partitions(source_name, table_name, loaded_relation) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- if not execute -%}
        {{- return([]) -}}
    {%- endif -%}
    {%- set query -%}
        with

        lake_files as (
            select {{ lake_relative_path('file') }} as _file
            from glob('{{ lake_glob(relation) }}')
        ),

        read_before as (
            {{ lake_files_read_before(table_name, source_name, loaded_relation) }}
        )

        select distinct regexp_extract(_file, 'event_date=([^/]+)/', 1) as event_date
        from lake_files
        anti join read_before using (_file)
        order by event_date
    {%- endset -%}
    {{- return(run_query(query).columns[0].values() | list) -}}
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


{#-
    The lake manifest of a dataset: one row per committed file (path relative to the
    lake root, rows, committed_at, the Kafka offset ranges it holds).

    A line is appended after its file is renamed into place; a last line without its
    newline is a torn append and is ignored. No manifest yet: no rows.
-#}
{% macro lake_manifest(dataset, source_name='payments') -%}
    {%- set path = lake_dir(source_name) ~ '/_manifest/' ~ source_name ~ '/' ~ dataset ~ '.jsonl' if execute else '' -%}
    {%- set exists = execute and run_query("select count(*) from glob('" ~ path ~ "')").columns[0].values()[0] > 0 -%}
    {%- if exists -%}
    (
        with lines as (
            -- everything before the last newline: complete lines only
            select unnest(string_split(content, chr(10))[1:-2]) as line
            from read_text('{{ path }}')
        )
        select
            line ->> '$.path' as path,
            line ->> '$.dataset' as dataset,
            cast(line ->> '$.rows' as bigint) as rows,
            cast(line ->> '$.committed_at' as timestamptz) as committed_at,
            cast(
                line -> '$.ranges' as
                struct(topic varchar, "partition" integer, first_offset bigint, last_offset bigint)[]
            ) as ranges
        from lines
        where line <> ''
    )
    {%- else -%}
    (
        select
            cast(null as varchar) as path,
            cast(null as varchar) as dataset,
            cast(null as bigint) as rows,
            cast(null as timestamptz) as committed_at,
            cast(null as struct(topic varchar, "partition" integer, first_offset bigint, last_offset bigint)[]) as ranges
        limit 0
    )
    {%- endif -%}
{%- endmacro %}
