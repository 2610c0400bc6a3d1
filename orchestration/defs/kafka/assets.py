"""Kafka topics as assets: materializing one reconciles it with its declaration.

Each declared topic (``riverbed/topics.py``) is an asset. Materializing it does
what ``riverbed topics apply`` does for that topic and records what the
cluster now holds; its check fails when the topic still differs from the
declaration (something Kafka cannot change in place, such as fewer partitions).
"""

import json
from collections.abc import Iterator

import dagster as dg

from orchestration.lib.keys import topic_key
from orchestration.lib.settings import RiverbedResource
from riverbed.kafka_admin import (
    admin_client,
    apply_topics,
    cluster_size,
    high_watermarks,
    topic_drift,
)
from riverbed.topics import CATALOG, TopicSpec

_BY_KEY = {topic_key(spec.name): spec for spec in CATALOG}
CHECK_NAME = "matches_declaration"


def _spec(topic: TopicSpec) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=topic_key(topic.name),
        description=f"Kafka topic `{topic.name}`: {topic.description}",
        group_name="kafka",
        kinds={"kafka"},
        metadata={"topic": topic.name, "declared_partitions": topic.partitions},
        skippable=True,
    )


@dg.multi_asset(
    specs=[_spec(t) for t in CATALOG],
    check_specs=[dg.AssetCheckSpec(CHECK_NAME, asset=topic_key(t.name)) for t in CATALOG],
    can_subset=True,
    name="kafka_topics",
)
def kafka_topics(
    context: dg.AssetExecutionContext, riverbed: RiverbedResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    settings = riverbed.settings()
    selected = [_BY_KEY[key] for key in sorted(context.selected_asset_keys, key=str)]
    results = apply_topics(settings, selected)
    brokers = cluster_size(settings, admin_client(settings))
    for spec, result in zip(selected, results, strict=True):
        if result.error:
            raise dg.Failure(
                f"topic {spec.name}: {result.error}",
                metadata={"bootstrap": settings.bootstrap_servers},
            )
        state = result.state
        watermarks = high_watermarks(settings, spec.name) if state else {}
        drift = topic_drift(settings, spec, state, brokers)
        context.log.info(result.summary())
        yield dg.MaterializeResult(
            asset_key=topic_key(spec.name),
            metadata={
                "actions": ", ".join(result.actions) or "unchanged",
                "partitions": state.partitions if state else 0,
                "replication_factor": state.replication_factor if state else 0,
                "configs": dg.MetadataValue.json(
                    {k: state.configs.get(k) for k in sorted(spec.configs)} if state else {}
                ),
                "high_watermarks": dg.MetadataValue.json(
                    {str(p): high for p, (_low, high) in watermarks.items()}
                ),
                "messages": sum(high - low for low, high in watermarks.values()),
                "drift": "; ".join(drift) or "none",
            },
        )
        yield dg.AssetCheckResult(
            asset_key=topic_key(spec.name),
            check_name=CHECK_NAME,
            passed=not drift,
            metadata={"drift": json.dumps(drift)},
            description="; ".join(drift) or "the topic matches its declaration",
        )
