"""Reconcile the cluster with the topic catalog, and read what is there.

``apply_topics`` creates what is missing, raises partition counts and sets
configs. What Kafka cannot change in place (fewer partitions, another
replication factor) is reported as drift on that topic, and the other topics
are still reconciled. Running it twice changes nothing the second time.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from riverbed.settings import Settings
from riverbed.topics import CATALOG, TopicSpec

log = logging.getLogger("riverbed.topics")
TIMEOUT_S = 30.0


@dataclass
class TopicState:
    """What the cluster holds for one topic."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]


@dataclass
class TopicResult:
    """The outcome of reconciling one topic."""

    name: str
    actions: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    error: str | None = None
    state: TopicState | None = None

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.drift

    def summary(self) -> str:
        if self.error:
            return f"{self.name}: FAILED: {self.error}"
        parts = self.actions or ["unchanged"]
        text = f"{self.name}: {', '.join(parts)}"
        if self.drift:
            text += f"; DRIFT: {'; '.join(self.drift)}"
        return text


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka_client_config())


def describe_topics(admin: AdminClient, names: Iterable[str]) -> dict[str, TopicState]:
    """Partitions, replication factor and non-default configs of the topics that exist."""
    metadata = admin.list_topics(timeout=TIMEOUT_S)
    present = [n for n in names if n in metadata.topics and not metadata.topics[n].error]
    states: dict[str, TopicState] = {}
    if not present:
        return states
    resources = [ConfigResource(ResourceType.TOPIC, n) for n in present]
    config_futures = admin.describe_configs(resources, request_timeout=TIMEOUT_S)
    for resource, future in config_futures.items():
        entries = future.result()
        name = resource.name
        partitions = metadata.topics[name].partitions
        replicas = {len(p.replicas) for p in partitions.values()}
        states[name] = TopicState(
            name=name,
            partitions=len(partitions),
            replication_factor=max(replicas) if replicas else 0,
            configs={k: e.value for k, e in entries.items() if e.value is not None},
        )
    return states


def _wanted_replication(spec: TopicSpec, settings: Settings) -> int:
    return spec.replication_factor or settings.kafka_replication_factor


def apply_topics(settings: Settings, specs: Iterable[TopicSpec] = CATALOG) -> list[TopicResult]:
    """Make the cluster match the declarations as far as Kafka allows."""
    specs = list(specs)
    admin = admin_client(settings)
    before = describe_topics(admin, [s.name for s in specs])
    results = {s.name: TopicResult(s.name) for s in specs}

    _create_missing(admin, settings, [s for s in specs if s.name not in before], results)
    for spec in specs:
        state = before.get(spec.name)
        if state is None or results[spec.name].error:
            continue
        _reconcile_existing(admin, settings, spec, state, results[spec.name])

    applied = [s for s in specs if not results[s.name].error]
    after = _describe_applied(admin, [s.name for s in specs], applied)
    for spec in specs:
        results[spec.name].state = after.get(spec.name)
    for result in results.values():
        log.info("topic reconciled", extra={"topic": result.name, "result": result.summary()})
    return list(results.values())


def recreate_topics(settings: Settings, groups: Iterable[str] | None = None) -> None:
    """Empty the declared topics: delete them and ``groups`` (default: every consumer
    group), wait until the deletion shows, then declare them again (:func:`apply_topics`).

    For tests and benchmarks that need a clean cluster; it loses every message.
    """
    admin = admin_client(settings)
    existing = set(admin.list_topics(timeout=TIMEOUT_S).topics)
    doomed = [spec.name for spec in CATALOG if spec.name in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=TIMEOUT_S).values():
            future.result()
    if groups is None:
        groups = [g.group_id for g in admin.list_consumer_groups().result().valid]
    groups = list(groups)
    if groups:
        for future in admin.delete_consumer_groups(groups, request_timeout=TIMEOUT_S).values():
            # A group still in use by a lingering client is not ours to fight.
            with contextlib.suppress(KafkaException):
                future.result()
    # Deletion is asynchronous: wait until the metadata no longer lists the old topics,
    # or apply_topics would see them and leave them be.
    deadline = time.monotonic() + 60
    while set(doomed) & set(admin.list_topics(timeout=TIMEOUT_S).topics):
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics {doomed} were not deleted within 60 s")
        time.sleep(0.2)
    while True:
        results = apply_topics(settings)
        if all(r.error is None and r.state is not None for r in results):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                "could not recreate topics: " + "; ".join(r.summary() for r in results)
            )
        time.sleep(0.5)


def _describe_applied(
    admin: AdminClient, names: list[str], applied: list[TopicSpec], timeout: float = 10.0
) -> dict[str, TopicState]:
    """The state of ``names`` once what was just ``applied`` shows in it.

    A broker answers metadata and config requests from its copy of the cluster
    metadata, which follows the controller's a moment later: read right after a
    change, it can still show the old partitions or configs.
    """
    deadline = time.monotonic() + timeout
    while True:
        states = describe_topics(admin, names)
        if all(_shows(spec, states.get(spec.name)) for spec in applied):
            return states
        if time.monotonic() > deadline:
            return states  # report what the cluster says; drift is reported from it
        time.sleep(0.1)


def _shows(spec: TopicSpec, state: TopicState | None) -> bool:
    return (
        state is not None
        and state.partitions >= spec.partitions
        and all(state.configs.get(k) == v for k, v in spec.configs.items())
    )


def _create_missing(
    admin: AdminClient,
    settings: Settings,
    missing: list[TopicSpec],
    results: dict[str, TopicResult],
) -> None:
    if not missing:
        return
    new_topics = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=_wanted_replication(s, settings),
            config=dict(s.configs),
        )
        for s in missing
    ]
    for name, future in admin.create_topics(new_topics, request_timeout=TIMEOUT_S).items():
        try:
            future.result()
            spec = next(s for s in missing if s.name == name)
            results[name].actions.append(f"created with {spec.partitions} partitions")
        except KafkaException as exc:
            results[name].error = str(exc.args[0])


def _reconcile_existing(
    admin: AdminClient,
    settings: Settings,
    spec: TopicSpec,
    state: TopicState,
    result: TopicResult,
) -> None:
    wanted_rf = _wanted_replication(spec, settings)
    if state.replication_factor != wanted_rf:
        result.drift.append(
            f"replication factor is {state.replication_factor}, declared {wanted_rf} "
            "(Kafka cannot change it in place: reassign partitions)"
        )
    if state.partitions < spec.partitions:
        future = admin.create_partitions(
            [NewPartitions(spec.name, spec.partitions)], request_timeout=TIMEOUT_S
        )[spec.name]
        try:
            future.result()
            result.actions.append(f"partitions {state.partitions} -> {spec.partitions}")
        except KafkaException as exc:
            result.error = f"could not add partitions: {exc.args[0]}"
    elif state.partitions > spec.partitions:
        result.drift.append(
            f"has {state.partitions} partitions, declared {spec.partitions} "
            "(Kafka cannot remove partitions)"
        )

    differing = {k: v for k, v in spec.configs.items() if state.configs.get(k) != v}
    if differing:
        resource = ConfigResource(
            ResourceType.TOPIC,
            spec.name,
            incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                for k, v in differing.items()
            ],
        )
        future = admin.incremental_alter_configs([resource])[resource]
        try:
            future.result()
            result.actions.append("set " + ", ".join(f"{k}={v}" for k, v in differing.items()))
        except KafkaException as exc:
            result.error = f"could not set configs: {exc.args[0]}"


def topic_drift(settings: Settings, spec: TopicSpec, state: TopicState | None) -> list[str]:
    """How the cluster's topic differs from its declaration, without changing anything."""
    if state is None:
        return ["topic does not exist"]
    drift = []
    wanted_rf = _wanted_replication(spec, settings)
    if state.partitions != spec.partitions:
        drift.append(f"partitions {state.partitions}, declared {spec.partitions}")
    if state.replication_factor != wanted_rf:
        drift.append(f"replication factor {state.replication_factor}, declared {wanted_rf}")
    for key, value in spec.configs.items():
        if state.configs.get(key) != value:
            drift.append(f"{key}={state.configs.get(key)}, declared {value}")
    return drift


def _admin_consumer(settings: Settings, group: str = "riverbed.admin") -> Consumer:
    return Consumer(
        {**settings.kafka_client_config(), "group.id": group, "enable.auto.commit": False}
    )


def _watermarks(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    partitions = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT_S)
        for p in sorted(partitions)
    }


def high_watermarks(settings: Settings, topic: str) -> dict[int, tuple[int, int]]:
    """(low, high) offsets of every partition of a topic."""
    consumer = _admin_consumer(settings)
    try:
        return _watermarks(consumer, topic)
    finally:
        consumer.close()


_PASSING_GROUP_ERRORS = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.UNSTABLE_OFFSET_COMMIT,
    KafkaError._TIMED_OUT,
}


# How long to wait for a group's committed offsets to become stable. A flow killed
# with a Kafka transaction open leaves offsets pending in it; a read_committed reader
# gets UNSTABLE_OFFSET_COMMIT (librdkafka retries it inside committed() until its
# timeout) until the broker aborts that transaction: after the producers'
# transaction.timeout.ms (60 s, flows/kafka_outputs.py) and the broker's sweep for
# timed-out transactions (every 10 s), or sooner when a new producer with the same
# transactional.id fences it.
STABLE_OFFSETS_WAIT_S = 90.0
_COMMITTED_CALL_S = 5.0


def committed_offsets(
    consumer: Consumer,
    topic: str,
    partitions: Iterable[int],
    timeout: float = STABLE_OFFSETS_WAIT_S,
) -> dict[int, int]:
    """The consumer's group's committed offset per partition (absent: none committed).

    Retries what the broker says is passing: a coordinator still loading after a start
    (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS), or a transactional offset commit
    still being completed (UNSTABLE_OFFSET_COMMIT, see :data:`STABLE_OFFSETS_WAIT_S`),
    in short calls, logging each wait, until ``timeout``.
    """
    wanted = [TopicPartition(topic, p) for p in partitions]
    began = time.monotonic()
    deadline = began + timeout
    pause = 0.2
    while True:
        call = max(0.5, min(_COMMITTED_CALL_S, deadline - time.monotonic()))
        try:
            found = consumer.committed(wanted, timeout=call)
            return {tp.partition: tp.offset for tp in found if tp.error is None and tp.offset >= 0}
        except KafkaException as exc:
            err = exc.args[0]
            passing = err.retriable() or err.code() in _PASSING_GROUP_ERRORS
            if not passing or time.monotonic() > deadline:
                raise
            log.info(
                "committed offsets not stable yet (a transaction of a previous run may "
                "still be open), retrying",
                extra={
                    "topic": topic,
                    "err": err.name(),
                    "waited_s": round(time.monotonic() - began, 1),
                    "gives_up_after_s": timeout,
                },
            )
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def consumer_lag(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """Per-partition lag of a consumer group: high watermark minus committed offset."""
    consumer = _admin_consumer(settings, group)
    try:
        watermarks = _watermarks(consumer, topic)
        committed = committed_offsets(consumer, topic, watermarks, timeout=TIMEOUT_S)
        return {p: max(0, high - committed.get(p, low)) for p, (low, high) in watermarks.items()}
    finally:
        consumer.close()
