"""The code location loads, and its graph connects topic → flow → lake → warehouse."""

import dagster as dg

from orchestration.definitions import defs


def test_definitions_load_and_validate() -> None:
    definitions = defs()
    dg.Definitions.validate_loadable(definitions)
    assert {s.name for s in definitions.sensors or []} == {
        "kafka_cluster_health",
        "flow_liveness",
        "consumer_lag",
        "lake_new_files",
        "lake_freshness",
        "card_profiles_after_build",
    }
    assert {s.name for s in definitions.schedules or []} == {
        "warehouse_every_5_minutes",
        "lake_upkeep_hourly",
        "card_profiles_hourly",
    }


def test_card_profiles_come_from_the_lake_and_go_to_their_topic() -> None:
    graph = defs().resolve_asset_graph()
    key = dg.AssetKey.from_user_string
    profiles = graph.get(key("features/card_profiles"))
    assert profiles.parent_keys == {
        key("lake/payments/transactions"),
        key("kafka/payments_card_profiles"),
    }
    job = defs().resolve_job_def("publish_card_profiles")
    assert job.asset_layer.selected_asset_keys == {key("features/card_profiles")}


def test_lake_tables_are_delta_assets_with_their_upkeep() -> None:
    graph = defs().resolve_asset_graph()
    key = dg.AssetKey.from_user_string
    for dataset in ("transactions", "alerts", "merchant_minute"):
        table = graph.get(key(f"lake/payments/{dataset}"))
        assert table.kinds == {"delta"}
        assert "Delta table" in (table.description or "")
        assert "manifest" not in (table.description or "")
        assert table.metadata["path"] == f"lake/payments/{dataset}"
        upkeep = graph.get(key(f"lake_upkeep/payments/{dataset}"))
        assert upkeep.parent_keys == {key(f"lake/payments/{dataset}")}
        assert upkeep.is_materializable
    job = defs().resolve_job_def("lake_upkeep")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        f"lake_upkeep/payments/{d}" for d in ("transactions", "alerts", "merchant_minute")
    }


def test_lineage_reads_topic_flow_lake_models() -> None:
    graph = defs().resolve_asset_graph()
    key = dg.AssetKey.from_user_string
    assert key("kafka/payments_transactions") in graph.get(key("flows/payments")).parent_keys
    for dataset in ("transactions", "alerts", "merchant_minute"):
        assert graph.get(key(f"lake/payments/{dataset}")).parent_keys == {key("flows/payments")}
    for mart, lake in (
        ("fct_transactions", "transactions"),
        ("fct_fraud_alerts", "alerts"),
        ("agg_merchant_hourly", "merchant_minute"),
    ):
        assert key(f"lake/payments/{lake}") in ancestors(graph, key(f"warehouse/{mart}"))


def ancestors(graph: object, asset: dg.AssetKey) -> set[dg.AssetKey]:
    seen: set[dg.AssetKey] = set()
    todo = [asset]
    while todo:
        for parent in graph.get(todo.pop()).parent_keys:  # type: ignore[attr-defined]
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen
