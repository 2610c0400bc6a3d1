"""The code location loads, and its graph connects topic → flow → lake → warehouse."""

import dagster as dg
import pytest

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
        "device_baselines_after_build",
    }
    assert {s.name for s in definitions.schedules or []} == {
        "warehouse_every_5_minutes",
        "lake_upkeep_hourly",
        "card_profiles_hourly",
        "device_baselines_hourly",
    }


@pytest.mark.parametrize(
    ("feature", "lake", "topic", "job"),
    [
        (
            "card_profiles",
            "payments/transactions",
            "payments_card_profiles",
            "publish_card_profiles",
        ),
        ("device_baselines", "iot/readings", "iot_device_baselines", "publish_device_baselines"),
    ],
)
def test_features_come_from_the_lake_and_go_to_their_topic(
    feature: str, lake: str, topic: str, job: str
) -> None:
    graph = defs().resolve_asset_graph()
    key = dg.AssetKey.from_user_string
    asset = graph.get(key(f"features/{feature}"))
    assert asset.parent_keys == {key(f"lake/{lake}"), key(f"kafka/{topic}")}
    selected = defs().resolve_job_def(job).asset_layer.selected_asset_keys
    assert selected == {key(f"features/{feature}")}


TABLES = [
    *(f"payments/{d}" for d in ("transactions", "alerts", "merchant_minute")),
    *(f"iot/{d}" for d in ("readings", "anomalies", "device_window", "room_state")),
]


def test_lake_tables_are_delta_assets_with_their_upkeep() -> None:
    graph = defs().resolve_asset_graph()
    key = dg.AssetKey.from_user_string
    for table_name in TABLES:
        table = graph.get(key(f"lake/{table_name}"))
        assert table.kinds == {"delta"}
        assert "Delta table" in (table.description or "")
        assert "manifest" not in (table.description or "")
        assert table.metadata["path"] == f"lake/{table_name}"
        upkeep = graph.get(key(f"lake_upkeep/{table_name}"))
        assert upkeep.parent_keys == {key(f"lake/{table_name}")}
        assert upkeep.is_materializable
    job = defs().resolve_job_def("lake_upkeep")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        f"lake_upkeep/{t}" for t in TABLES
    }


def test_lineage_reads_topic_flow_lake_models() -> None:
    graph = defs().resolve_asset_graph()
    key = dg.AssetKey.from_user_string
    assert key("kafka/payments_transactions") in graph.get(key("flows/payments")).parent_keys
    for table_name in TABLES:
        domain = table_name.split("/")[0]
        assert graph.get(key(f"lake/{table_name}")).parent_keys == {key(f"flows/{domain}")}
    assert key("kafka/iot_readings") in graph.get(key("flows/iot")).parent_keys
    for mart, lake in (
        ("fct_transactions", "transactions"),
        ("fct_fraud_alerts", "alerts"),
        ("agg_merchant_hourly", "merchant_minute"),
    ):
        assert key(f"lake/payments/{lake}") in ancestors(graph, key(f"warehouse/{mart}"))
    for mart, lake in (
        ("fct_iot__device_hourly", "readings"),
        ("fct_iot__anomalies", "anomalies"),
        ("fct_iot__room_occupancy", "room_state"),
    ):
        assert key(f"lake/iot/{lake}") in ancestors(graph, key(f"warehouse/{mart}"))


def ancestors(graph: object, asset: dg.AssetKey) -> set[dg.AssetKey]:
    seen: set[dg.AssetKey] = set()
    todo = [asset]
    while todo:
        for parent in graph.get(todo.pop()).parent_keys:  # type: ignore[attr-defined]
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen
