"""Reconcile the cluster with the topic catalog, and read what is there.

``apply_topics`` creates what is missing, raises partition counts, sets configs
and raises replication factors. What Kafka cannot do (remove partitions) or
Riverbed will not do on its own (lower a replication factor) is reported as
drift on that topic, and the other topics are still reconciled. Running it
twice changes nothing the second time.

Replication by declaration: a declared topic gets replication factor
``min(3, brokers)`` (``RIVERBED_KAFKA_REPLICATION_FACTOR`` overrides it) and,
where the factor is 3 or more, ``min.insync.replicas=2``: with ``acks=all`` a
write is then on two brokers before it is acknowledged, and the topic takes
writes while one broker is down. ``brokers`` is the local cluster's node count,
or for an external cluster the brokers its metadata lists.

A replication factor is raised by partition reassignment, with Kafka's own
``ReassignPartitionsCommand`` (the Java admin API's alterPartitionReassignments;
librdkafka has no such call), and ``apply_topics`` waits until the new replicas
are in sync.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ClusterMetadata,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from riverbed.kafka_jars import KafkaJars, KafkaJarsError
from riverbed.logs import KAFKA_CLIENT_LOG, LibrdkafkaLog
from riverbed.settings import Settings
from riverbed.topics import CATALOG, TopicSpec

log = logging.getLogger("riverbed.topics")
TIMEOUT_S = 30.0
REASSIGN_TOOL = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"
REASSIGN_TIMEOUT_S = 300.0


@dataclass
class TopicState:
    """What the cluster holds for one topic."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]
    # partition -> replica broker ids, the preferred leader first
    assignment: dict[int, list[int]] = field(default_factory=dict)
    # partitions with fewer in-sync replicas than replicas, or no leader
    under_replicated: list[int] = field(default_factory=list)
    offline: list[int] = field(default_factory=list)


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
        if self.state and self.state.offline:
            text += f"; OFFLINE partitions {self.state.offline}"
        if self.state and self.state.under_replicated:
            text += f"; under-replicated partitions {self.state.under_replicated}"
        return text


def admin_client(settings: Settings) -> AdminClient:
    """An admin client whose librdkafka lines (a broker's connection refused) come out as
    Riverbed's log lines, not raw ``%3|…`` lines in a Dagster or CLI log; they are handed
    over at each metadata call (:func:`cluster_metadata` polls it)."""
    return AdminClient({**settings.kafka_client_config(), "logger": KAFKA_CLIENT_LOG})


def quiet_admin(settings: Settings) -> AdminClient:
    """An admin client that does not print every refused connection to a node that is down.

    While a broker is starting, librdkafka reports each refused connection (every
    ~50 ms) at ERROR on stderr; those are expected here and would drown the progress,
    so its lines go to this module's logger at DEBUG.
    """
    return AdminClient(
        {**settings.kafka_client_config(), "logger": LibrdkafkaLog(log.name, at=logging.DEBUG)}
    )


def cluster_metadata(
    client: AdminClient | Consumer, topic: str | None = None, timeout: float = TIMEOUT_S
) -> ClusterMetadata:
    """The cluster's metadata (one topic's, or every topic's), retried until ``timeout``.

    librdkafka asks one broker; when that is a broker just killed or restarting, the
    call fails at once with _TRANSPORT instead of trying the next bootstrap server.
    Passing errors like that one are retried here, with a log line, until ``timeout``.
    """
    deadline = time.monotonic() + timeout
    pause = 0.1
    while True:
        remaining = deadline - time.monotonic()
        try:
            return client.list_topics(topic, timeout=max(remaining, 0.5))
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            passing = err.retriable() or err.code() in _PASSING_METADATA_ERRORS
            if not passing or time.monotonic() > deadline:
                raise
            log.info(
                "metadata request failed, retrying",
                extra={"err": err.name(), "gives_up_in_s": round(remaining, 1)},
            )
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
        finally:
            if isinstance(client, AdminClient):
                # Its log lines are handed over in poll(); an admin client has nothing
                # else to poll for. (A consumer's poll would read messages.)
                client.poll(0)


_PASSING_METADATA_ERRORS = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError.LEADER_NOT_AVAILABLE,
}


def describe_topics(admin: AdminClient, names: Iterable[str]) -> dict[str, TopicState]:
    """Partitions, replication factor and non-default configs of the topics that exist."""
    metadata = cluster_metadata(admin)
    present = [n for n in names if n in metadata.topics and not metadata.topics[n].error]
    states: dict[str, TopicState] = {}
    if not present:
        return states
    resources = [ConfigResource(ResourceType.TOPIC, n) for n in present]
    config_futures = admin.describe_configs(resources, request_timeout=TIMEOUT_S)
    for resource, future in config_futures.items():
        try:
            entries = future.result()
        except KafkaException as exc:
            # A topic created a moment ago may not be in the answering broker's copy of
            # the metadata yet: not there, for now (callers that just made it wait).
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
            continue
        name = resource.name
        partitions = metadata.topics[name].partitions
        replicas = {len(p.replicas) for p in partitions.values()}
        states[name] = TopicState(
            name=name,
            partitions=len(partitions),
            replication_factor=max(replicas) if replicas else 0,
            configs={k: e.value for k, e in entries.items() if e.value is not None},
            assignment={n: list(p.replicas) for n, p in sorted(partitions.items())},
            under_replicated=sorted(
                n for n, p in partitions.items() if p.leader >= 0 and len(p.isrs) < len(p.replicas)
            ),
            offline=sorted(n for n, p in partitions.items() if p.leader < 0),
        )
    return states


def cluster_size(settings: Settings, admin: AdminClient) -> int:
    """Brokers a topic's replicas can be spread over: the local cluster's nodes (a node
    that is down still counts), or the brokers an external cluster's metadata lists."""
    if settings.manages_local_broker:
        return settings.kafka_brokers
    return len(cluster_metadata(admin).brokers)


def declared_replication(settings: Settings, spec: TopicSpec, brokers: int) -> int:
    """The replication factor ``spec`` should have on a cluster of ``brokers``."""
    return spec.replication_factor or settings.kafka_replication_factor or min(3, brokers)


def declared_configs(spec: TopicSpec, replication: int) -> dict[str, str]:
    """The topic configs ``spec`` should have at a replication factor of ``replication``."""
    configs = dict(spec.configs)
    if replication >= 3:
        configs.setdefault("min.insync.replicas", "2")
    return configs


def reassignment_plan(
    assignment: dict[int, list[int]], replication: int, brokers: Iterable[int]
) -> dict[int, list[int]]:
    """New replica lists that raise every partition to ``replication`` replicas.

    Each partition keeps its replicas in their order (its leader stays preferred) and
    gains the brokers that hold the fewest replicas so far, so load stays even.
    """
    brokers = sorted(brokers)
    load = Counter(b for replicas in assignment.values() for b in replicas)
    plan = {}
    for partition, replicas in sorted(assignment.items()):
        new = list(replicas)
        while len(new) < replication:
            # Ties go round the brokers by partition number, spreading the followers.
            candidates = [b for b in brokers if b not in new]
            if not candidates:
                break
            pick = min(candidates, key=lambda b: (load[b], (b - partition) % len(brokers)))
            new.append(pick)
            load[pick] += 1
        if new != replicas:
            plan[partition] = new
    return plan


def apply_topics(settings: Settings, specs: Iterable[TopicSpec] = CATALOG) -> list[TopicResult]:
    """Make the cluster match the declarations as far as Kafka allows."""
    specs = list(specs)
    admin = admin_client(settings)
    before = describe_topics(admin, [s.name for s in specs])
    brokers = cluster_size(settings, admin)
    results = {s.name: TopicResult(s.name) for s in specs}

    missing = [s for s in specs if s.name not in before]
    raced = _create_missing(admin, settings, missing, brokers, results)
    if raced:
        # Our metadata was behind (a topic created a moment ago, by us or by another
        # client): reconcile those as the existing topics they are.
        before.update(_described_once_visible(admin, raced))
    for spec in specs:
        state = before.get(spec.name)
        if state is None or results[spec.name].error:
            continue
        _reconcile_existing(admin, settings, spec, state, brokers, results[spec.name])

    applied = [s for s in specs if not results[s.name].error]
    wanted = {s.name: declared_replication(settings, s, brokers) for s in applied}
    after = _describe_applied(admin, [s.name for s in specs], applied, wanted)
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
    delete_topics(admin, [spec.name for spec in CATALOG])
    if groups is None:
        groups = [g.group_id for g in admin.list_consumer_groups().result().valid]
    delete_groups(admin, groups)
    deadline = time.monotonic() + 60
    while True:
        results = apply_topics(settings)
        if all(r.error is None and r.state is not None for r in results):
            _wait_until_led(settings, [spec.name for spec in CATALOG])
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                "could not recreate topics: " + "; ".join(r.summary() for r in results)
            )
        time.sleep(0.5)


def delete_groups(admin: AdminClient, groups: Iterable[str]) -> None:
    """Delete the consumer groups ``groups`` (their committed offsets); one still in use
    by a lingering client is left alone."""
    groups = list(groups)
    if not groups:
        return
    for future in admin.delete_consumer_groups(groups, request_timeout=TIMEOUT_S).values():
        # A group still in use by a lingering client is not ours to fight.
        with contextlib.suppress(KafkaException):
            future.result()


def _wait_until_led(settings: Settings, names: list[str]) -> None:
    """Until every partition of ``names`` answers an offsets request: the metadata
    lists a new topic's leader a moment before that leader serves it, and a reader
    right after (a test's first read-back) got NOT_LEADER_FOR_PARTITION."""
    consumer = _admin_consumer(settings)
    try:
        for name in names:
            _watermarks(consumer, name)
    finally:
        close_polled(consumer)


def delete_topics(admin: AdminClient, names: Iterable[str], timeout: float = 60) -> list[str]:
    """Delete those of ``names`` that exist, and wait until the metadata no longer
    lists them (deletion is asynchronous: a topic created or applied before that would
    meet the old one). The names deleted."""
    existing = set(cluster_metadata(admin).topics)
    doomed = [name for name in names if name in existing]
    if not doomed:
        return []
    for future in admin.delete_topics(doomed, operation_timeout=TIMEOUT_S).values():
        future.result()
    deadline = time.monotonic() + timeout
    while set(doomed) & set(cluster_metadata(admin).topics):
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics {doomed} were not deleted within {timeout:.0f} s")
        time.sleep(0.2)
    return doomed


def _describe_applied(
    admin: AdminClient,
    names: list[str],
    applied: list[TopicSpec],
    replication: dict[str, int],
    timeout: float = 10.0,
) -> dict[str, TopicState]:
    """The state of ``names`` once what was just ``applied`` shows in it.

    A broker answers metadata and config requests from its copy of the cluster
    metadata, which follows the controller's a moment later: read right after a
    change, it can still show the old partitions or configs.
    """
    deadline = time.monotonic() + timeout
    while True:
        states = describe_topics(admin, names)
        if all(_shows(s, replication[s.name], states.get(s.name)) for s in applied):
            return states
        if time.monotonic() > deadline:
            return states  # report what the cluster says; drift is reported from it
        time.sleep(0.1)


def _shows(spec: TopicSpec, replication: int, state: TopicState | None) -> bool:
    return (
        state is not None
        and state.partitions >= spec.partitions
        and all(state.configs.get(k) == v for k, v in declared_configs(spec, replication).items())
    )


def _create_missing(
    admin: AdminClient,
    settings: Settings,
    missing: list[TopicSpec],
    brokers: int,
    results: dict[str, TopicResult],
) -> list[str]:
    """Create ``missing``; the names that turned out to exist already."""
    if not missing:
        return []
    raced = []
    new_topics = []
    for spec in missing:
        replication = declared_replication(settings, spec, brokers)
        new_topics.append(
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=replication,
                config=declared_configs(spec, replication),
            )
        )
    for name, future in admin.create_topics(new_topics, request_timeout=TIMEOUT_S).items():
        try:
            future.result()
            spec = next(s for s in missing if s.name == name)
            results[name].actions.append(f"created with {spec.partitions} partitions")
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                raced.append(name)
            else:
                results[name].error = str(exc.args[0])
    return raced


def _described_once_visible(
    admin: AdminClient, names: list[str], timeout: float = 10.0
) -> dict[str, TopicState]:
    deadline = time.monotonic() + timeout
    while True:
        found = describe_topics(admin, names)
        if set(names) <= set(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _reconcile_existing(
    admin: AdminClient,
    settings: Settings,
    spec: TopicSpec,
    state: TopicState,
    brokers: int,
    result: TopicResult,
) -> None:
    wanted_rf = declared_replication(settings, spec, brokers)
    if state.replication_factor > wanted_rf:
        result.drift.append(
            f"replication factor is {state.replication_factor}, declared {wanted_rf} "
            "(Riverbed does not remove replicas: lower it by hand with kafka-reassign-partitions)"
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

    # Replicas first: min.insync.replicas=2 on a topic with one replica refuses every write.
    reached = state.replication_factor
    if reached < wanted_rf and not result.error:
        _raise_replication(admin, settings, spec, wanted_rf, result)
        reached = reached if result.error else wanted_rf
    configs = declared_configs(spec, reached)
    differing = {k: v for k, v in configs.items() if state.configs.get(k) != v}
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


def _raise_replication(
    admin: AdminClient, settings: Settings, spec: TopicSpec, replication: int, result: TopicResult
) -> None:
    """Add replicas by reassignment and wait until they are in sync."""
    metadata = cluster_metadata(admin)
    live = sorted(metadata.brokers)
    if len(live) < replication:
        result.error = (
            f"replication factor {replication} is declared but only {len(live)} broker(s) "
            f"{live} are up; start the others and apply again"
        )
        return
    partitions = metadata.topics[spec.name].partitions
    current = {n: list(p.replicas) for n, p in partitions.items()}
    before = max(len(r) for r in current.values())
    plan = reassignment_plan(current, replication, live)
    document = {
        "version": 1,
        "partitions": [
            {"topic": spec.name, "partition": n, "replicas": replicas}
            for n, replicas in sorted(plan.items())
        ],
    }
    log.info("raising replication", extra={"topic": spec.name, "to": replication, "plan": plan})
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="riverbed-reassign-") as file:
        json.dump(document, file)
        file.flush()
        try:
            KafkaJars(settings).run_against_cluster(
                REASSIGN_TOOL, "--execute", "--reassignment-json-file", file.name
            )
        except KafkaJarsError as exc:
            result.error = f"could not reassign partitions to raise the replication factor: {exc}"
            return
    waited = _await_replicas(admin, spec.name, plan)
    if waited is None:
        result.error = (
            f"the new replicas of {spec.name} were not in sync within "
            f"{REASSIGN_TIMEOUT_S:.0f} s; the reassignment goes on in the cluster: run "
            "`riverbed topics apply` again later"
        )
        return
    result.actions.append(
        f"replication factor {before} -> {replication} (new replicas in sync in {waited:.1f} s)"
    )


def _await_replicas(admin: AdminClient, topic: str, plan: dict[int, list[int]]) -> float | None:
    """Seconds until every planned partition has exactly its new replicas, all in sync."""
    began = time.monotonic()
    said = began
    while time.monotonic() - began < REASSIGN_TIMEOUT_S:
        partitions = cluster_metadata(admin, topic).topics[topic].partitions
        behind = [
            n
            for n, replicas in plan.items()
            if list(partitions[n].replicas) != replicas
            or sorted(partitions[n].isrs) != sorted(replicas)
        ]
        if not behind:
            return time.monotonic() - began
        if time.monotonic() - said > 5:
            said = time.monotonic()
            log.info(
                "waiting for new replicas to catch up",
                extra={"topic": topic, "partitions": behind},
            )
        time.sleep(0.5)
    return None


def topic_drift(
    settings: Settings, spec: TopicSpec, state: TopicState | None, brokers: int
) -> list[str]:
    """How the cluster's topic differs from its declaration on a cluster of ``brokers``
    (:func:`cluster_size`), without changing anything."""
    if state is None:
        return ["topic does not exist"]
    drift = []
    wanted_rf = declared_replication(settings, spec, brokers)
    if state.partitions != spec.partitions:
        drift.append(f"partitions {state.partitions}, declared {spec.partitions}")
    if state.replication_factor != wanted_rf:
        drift.append(f"replication factor {state.replication_factor}, declared {wanted_rf}")
    for key, value in declared_configs(spec, wanted_rf).items():
        if state.configs.get(key) != value:
            drift.append(f"{key}={state.configs.get(key)}, declared {value}")
    return drift


def _admin_consumer(settings: Settings, group: str = "riverbed.admin") -> Consumer:
    """A consumer only asked for offsets (never assigned): close it with
    :func:`close_polled`, which hands its log lines over."""
    return Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "logger": KAFKA_CLIENT_LOG,
        }
    )


def close_polled(consumer: Consumer) -> None:
    """Close a consumer that was only asked for metadata or offsets (nothing assigned, so
    ``poll`` reads no message), after handing its last librdkafka lines to its logger:
    confluent-kafka hands them over in ``poll()``."""
    consumer.poll(0)
    consumer.close()


def _watermarks(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    partitions = cluster_metadata(consumer, topic).topics[topic].partitions
    return {p: _watermark(consumer, topic, p) for p in sorted(partitions)}


def _watermark(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    """A partition's (low, high) offsets, retried until :data:`TIMEOUT_S` while the
    answer is a passing one: a topic just created, or a leader moving, answers
    NOT_LEADER_FOR_PARTITION for a moment."""
    deadline = time.monotonic() + TIMEOUT_S
    pause = 0.1
    while True:
        remaining = deadline - time.monotonic()
        try:
            return consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=max(remaining, 0.5)
            )
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            passing = err.retriable() or err.code() in _PASSING_LEADER_ERRORS
            if not passing or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


_PASSING_LEADER_ERRORS = {
    *_PASSING_METADATA_ERRORS,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


def high_watermarks(settings: Settings, topic: str) -> dict[int, tuple[int, int]]:
    """(low, high) offsets of every partition of a topic."""
    consumer = _admin_consumer(settings)
    try:
        return _watermarks(consumer, topic)
    finally:
        close_polled(consumer)


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
# transaction.timeout.ms (60 s, flows/kit/kafka_outputs.py) and the broker's sweep for
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
        close_polled(consumer)
