"""The topic catalog: every Kafka topic Riverbed uses, declared once.

``riverbed topics apply`` and the Dagster topic assets reconcile the cluster
with these declarations (see :mod:`riverbed.kafka_admin`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

DAY_MS = 24 * 60 * 60 * 1000

# How every Riverbed producer picks a keyed message's partition: murmur2, the Java
# client's partitioner, so a card lands in the same partition whichever client
# produced it, and its profile in the same-numbered partition as its transactions.
KEY_PARTITIONER = "murmur2_random"

# Durable (idempotent, acks from all in-sync replicas), batched and compressed, and
# partitioned by KEY_PARTITIONER: every Riverbed producer, of every topic, uses these.
#
# One request in flight per broker: with librdkafka's default of five, a cluster that
# was coming up (partitions below min.insync.replicas) refused a partition's first
# batch with NOT_ENOUGH_REPLICAS while its second was in flight; the broker took the
# second as the new producer's first write, and the retried first batch was then
# reported delivered, without an offset, and was never in the log. Measured: 1 run in
# 12 of "restart a 3-node cluster, produce 1,000 events at once" lost an acknowledged
# event this way, and the fault test of a flow started as the cluster comes up failed
# on it twice. With one in flight a partition's next batch waits for the previous one.
PRODUCER_DEFAULTS: Final[Mapping[str, str]] = {
    "enable.idempotence": "true",
    "acks": "all",
    "max.in.flight.requests.per.connection": "1",
    "linger.ms": "10",
    "batch.size": "262144",
    "compression.type": "lz4",
    "partitioner": KEY_PARTITIONER,
}

PAYMENTS_TRANSACTIONS = "payments.transactions"
PAYMENTS_ALERTS = "payments.alerts"
PAYMENTS_DLQ = "payments.transactions.dlq"
PAYMENTS_CARD_PROFILES = "payments.card_profiles"

IOT_READINGS = "iot.readings"
IOT_ANOMALIES = "iot.anomalies"
IOT_DLQ = "iot.readings.dlq"
IOT_DEVICE_BASELINES = "iot.device_baselines"


@dataclass(frozen=True)
class TopicSpec:
    """What a topic should look like on the cluster."""

    name: str
    domain: str
    partitions: int
    description: str
    configs: dict[str, str] = field(default_factory=dict)
    # None: take the cluster-wide setting (RIVERBED_KAFKA_REPLICATION_FACTOR).
    replication_factor: int | None = None


CATALOG: tuple[TopicSpec, ...] = (
    TopicSpec(
        name=PAYMENTS_TRANSACTIONS,
        domain="payments",
        partitions=6,
        description="Card transactions as producers publish them, keyed by card_id.",
        configs={
            "cleanup.policy": "delete",
            "retention.ms": str(7 * DAY_MS),
            "compression.type": "producer",
        },
    ),
    TopicSpec(
        name=PAYMENTS_ALERTS,
        domain="payments",
        partitions=3,
        description="Fraud alerts raised by the payments flow, keyed by card_id.",
        configs={"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
    ),
    TopicSpec(
        name=PAYMENTS_DLQ,
        domain="payments",
        partitions=1,
        description="Invalid transactions, original bytes unchanged, with the reason in the "
        "`error` header and their source in `source.topic/partition/offset`.",
        configs={"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
    ),
    TopicSpec(
        name=PAYMENTS_CARD_PROFILES,
        domain="payments",
        # As many as the transactions' topic, and the same key and partitioner
        # (KEY_PARTITIONER): a card's profile lands in the partition number its
        # transactions do, so a flow's partition needs only its own profiles.
        partitions=6,
        description="Card profiles computed by the batch layer (features/card_profiles), "
        "keyed by card_id; compacted, so the topic keeps the latest profile of each card.",
        configs={
            "cleanup.policy": "compact",
            # Roll segments daily, so superseded profiles become compactable.
            "segment.ms": str(DAY_MS),
        },
    ),
    TopicSpec(
        name=IOT_READINGS,
        domain="iot",
        partitions=6,
        description="Sensor readings as devices (or riverbed replay) publish them, keyed by "
        "device_id.",
        configs={
            "cleanup.policy": "delete",
            "retention.ms": str(7 * DAY_MS),
            "compression.type": "producer",
        },
    ),
    TopicSpec(
        name=IOT_ANOMALIES,
        domain="iot",
        partitions=3,
        description="Anomalies found by the IoT flow (range, baseline, flat line, dropout), "
        "keyed by device_id.",
        configs={"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
    ),
    TopicSpec(
        name=IOT_DLQ,
        domain="iot",
        partitions=1,
        description="Invalid readings, original bytes unchanged, with the reason in the "
        "`error` header and their source in `source.topic/partition/offset`.",
        configs={"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
    ),
    TopicSpec(
        name=IOT_DEVICE_BASELINES,
        domain="iot",
        # Partitioned like iot.readings (same key, KEY_PARTITIONER), as the card profiles.
        partitions=6,
        description="Device baselines per hour of day computed by the batch layer "
        "(features/device_baselines), keyed by device_id; compacted.",
        configs={"cleanup.policy": "compact", "segment.ms": str(DAY_MS)},
    ),
)


def topic(name: str) -> TopicSpec:
    """The declaration of one topic, by name."""
    for spec in CATALOG:
        if spec.name == name:
            return spec
    raise KeyError(f"no topic named {name!r} is declared in riverbed.topics.CATALOG")


def topics_of(domain: str) -> tuple[TopicSpec, ...]:
    return tuple(spec for spec in CATALOG if spec.domain == domain)
