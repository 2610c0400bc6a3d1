"""Broker health: the cluster answers metadata requests."""

import dagster as dg
from confluent_kafka.admin import AdminClient

from orchestration.lib.settings import RiverbedResource

log = dg.get_dagster_logger("riverbed.sensors")


@dg.sensor(
    name="kafka_broker_health",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Asks the cluster for metadata; fails (red in the UI) when it does not answer.",
)
def kafka_broker_health(
    context: dg.SensorEvaluationContext, riverbed: RiverbedResource
) -> dg.SkipReason:
    settings = riverbed.settings()
    admin = AdminClient(settings.kafka_client_config())
    try:
        metadata = admin.list_topics(timeout=10)
    except Exception as exc:  # any failure to answer is the news this sensor exists for
        log.error("broker unreachable", extra={"bootstrap": settings.bootstrap_servers})
        raise Exception(
            f"Kafka at {settings.bootstrap_servers} did not answer a metadata request: {exc}. "
            "Start it with `riverbed kafka start` (local) or check RIVERBED_KAFKA_BOOTSTRAP."
        ) from exc
    brokers = len(metadata.brokers)
    context.update_cursor(str(brokers))
    return dg.SkipReason(
        f"healthy: {brokers} broker(s), {len(metadata.topics)} topics at "
        f"{settings.bootstrap_servers}"
    )
