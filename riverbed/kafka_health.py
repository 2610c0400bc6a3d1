"""The health of a Kafka cluster, local or not: brokers, controller quorum, partitions.

What ``riverbed kafka status``, the rolling restart and the Dagster cluster check
and sensor report:

- **brokers**: those registered in the cluster's metadata. A broker that should be
  there and is not is *down*, named by id and address. For the local cluster the
  expected brokers are its nodes; for any cluster, a broker that a partition lists
  as a replica but the metadata does not list is down too.
- **quorum leader**: the active KRaft controller. librdkafka cannot describe the
  quorum (a broker answers DescribeCluster with a random broker as "controller"),
  so this runs Kafka's own ``MetadataQuorumCommand`` from the fetched jars.
- **under-replicated** partitions (fewer in-sync replicas than replicas) and
  **offline** ones (no leader: nobody can read or write them).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from confluent_kafka import KafkaException

from riverbed.kafka_admin import cluster_metadata, quiet_admin
from riverbed.kafka_jars import KafkaJars, KafkaJarsError
from riverbed.settings import Settings

log = logging.getLogger("riverbed.kafka_health")

QUORUM_TOOL = "org.apache.kafka.tools.MetadataQuorumCommand"
METADATA_TIMEOUT_S = 10.0


class _NamedBroker(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def address(self) -> str: ...


@dataclass(frozen=True)
class PartitionProblem:
    topic: str
    partition: int
    leader: int  # -1: none
    replicas: tuple[int, ...]
    in_sync: tuple[int, ...]

    def describe(self) -> str:
        leader = "no leader" if self.leader < 0 else f"leader {self.leader}"
        return (
            f"{self.topic}/{self.partition}: {leader}, replicas {list(self.replicas)}, "
            f"in sync {list(self.in_sync)}"
        )


@dataclass(frozen=True)
class ClusterHealth:
    bootstrap: str
    brokers: dict[int, str]  # registered: id -> host:port
    expected: dict[int, str]  # should be registered: id -> host:port
    quorum_leader: int | None = None
    quorum_voters: tuple[int, ...] = ()
    quorum_error: str | None = None
    under_replicated: tuple[PartitionProblem, ...] = ()
    offline: tuple[PartitionProblem, ...] = ()
    partitions: int = 0
    error: str | None = None  # the cluster did not answer at all

    @property
    def down(self) -> dict[int, str]:
        return {i: a for i, a in self.expected.items() if i not in self.brokers}

    @property
    def in_sync(self) -> bool:
        """Every partition has all its replicas in sync (and a leader)."""
        return self.error is None and not self.under_replicated and not self.offline

    @property
    def healthy(self) -> bool:
        return self.in_sync and not self.down and self.quorum_error is None

    def problems(self) -> list[str]:
        """What is wrong, one line each; empty when healthy."""
        if self.error:
            return [self.error]
        lines = [f"broker {i} ({address}) is DOWN" for i, address in sorted(self.down.items())]
        if self.quorum_error:
            lines.append(f"controller quorum: {self.quorum_error}")
        if self.offline:
            lines.append(
                f"{len(self.offline)} OFFLINE partition(s) (no leader: no reads, no writes)"
            )
        if self.under_replicated:
            lines.append(f"{len(self.under_replicated)} under-replicated partition(s)")
        return lines

    def report(self, detail: int = 10) -> str:
        """The human-readable report ``riverbed kafka status`` prints."""
        if self.error:
            return f"cluster at {self.bootstrap}: {self.error}"
        lines = [f"cluster at {self.bootstrap}: " + ("healthy" if self.healthy else "UNHEALTHY")]
        for broker_id in sorted(self.expected.keys() | self.brokers.keys()):
            address = self.brokers.get(broker_id) or self.expected[broker_id]
            state = "up" if broker_id in self.brokers else "DOWN"
            role = ", quorum leader" if broker_id == self.quorum_leader else ""
            lines.append(f"  broker {broker_id} ({address}): {state}{role}")
        if self.quorum_error:
            lines.append(f"  controller quorum: {self.quorum_error}")
        elif self.quorum_leader is not None:
            lines.append(
                f"  controller quorum: leader {self.quorum_leader}, voters "
                f"{list(self.quorum_voters)}"
            )
        lines.append(
            f"  partitions: {self.partitions}, under-replicated {len(self.under_replicated)}, "
            f"offline {len(self.offline)}"
        )
        for problem in [*self.offline, *self.under_replicated][:detail]:
            lines.append(f"    {problem.describe()}")
        hidden = len(self.offline) + len(self.under_replicated) - detail
        if hidden > 0:
            lines.append(f"    ... and {hidden} more")
        return "\n".join(lines)


def cluster_health(
    settings: Settings,
    *,
    expected: Iterable[_NamedBroker] = (),
    quorum: bool = True,
    admin: object | None = None,
    quorum_timeout_s: float | None = None,
) -> ClusterHealth:
    """Ask the cluster at ``settings.bootstrap_servers`` how it is.

    ``expected``: brokers that should be registered (the local cluster's nodes).
    ``quorum``: also describe the controller quorum (runs a Kafka tool, ~1.5 s).
    ``quorum_timeout_s``: see :func:`describe_quorum`.
    """
    client = admin or quiet_admin(settings)
    wanted = {b.id: b.address for b in expected}
    try:
        metadata = cluster_metadata(client, timeout=METADATA_TIMEOUT_S)  # type: ignore[arg-type]
    except KafkaException as exc:
        return ClusterHealth(
            bootstrap=settings.bootstrap_servers,
            brokers={},
            expected=wanted,
            error=f"no answer to a metadata request: {exc.args[0].str()}",
        )
    brokers = {b.id: f"{b.host}:{b.port}" for b in metadata.brokers.values()}
    under, offline, count = [], [], 0
    for name, topic in metadata.topics.items():
        for number, partition in topic.partitions.items():
            count += 1
            problem = PartitionProblem(
                name,
                number,
                partition.leader,
                tuple(partition.replicas),
                tuple(partition.isrs),
            )
            if partition.leader < 0:
                offline.append(problem)
            elif len(partition.isrs) < len(partition.replicas):
                under.append(problem)
            for replica in partition.replicas:
                if replica not in brokers and replica not in wanted:
                    wanted[replica] = "address unknown: not registered"
    health = ClusterHealth(
        bootstrap=settings.bootstrap_servers,
        brokers=brokers,
        expected=wanted,
        under_replicated=tuple(sorted(under, key=lambda p: (p.topic, p.partition))),
        offline=tuple(sorted(offline, key=lambda p: (p.topic, p.partition))),
        partitions=count,
    )
    if not quorum:
        return health
    leader, voters, error = describe_quorum(settings, timeout_s=quorum_timeout_s)
    return replace(health, quorum_leader=leader, quorum_voters=voters, quorum_error=error)


def busiest_leader(settings: Settings) -> int:
    """The broker that leads the most partitions (internal topics included): the one
    whose loss moves the most leaders."""
    metadata = cluster_metadata(quiet_admin(settings), timeout=METADATA_TIMEOUT_S)
    leaders = Counter(
        p.leader for t in metadata.topics.values() for p in t.partitions.values() if p.leader >= 0
    )
    return leaders.most_common(1)[0][0]


_LEADER = re.compile(r"^LeaderId:\s+(-?\d+)", re.MULTILINE)
_VOTERS = re.compile(r"^CurrentVoters:\s+(.*)$", re.MULTILINE)


def describe_quorum(
    settings: Settings, *, timeout_s: float | None = None
) -> tuple[int | None, tuple[int, ...], str | None]:
    """(leader id, voter ids, error) of the KRaft controller quorum.

    A quorum that lost its majority does not answer: the tool gives up after
    ``timeout_s`` (None: the Kafka admin client's default.api.timeout.ms, 60 s).
    """
    overrides = {}
    if timeout_s is not None:
        ms = str(int(timeout_s * 1000))
        overrides = {"default.api.timeout.ms": ms, "request.timeout.ms": ms}
    try:
        out = KafkaJars(settings).run_against_cluster(
            QUORUM_TOOL, "describe", "--status", client_overrides=overrides
        )
    except KafkaJarsError as exc:
        return None, (), f"could not describe it: {str(exc).splitlines()[-1]}"
    leader = _LEADER.search(out)
    voters = _VOTERS.search(out)
    voter_ids: tuple[int, ...] = ()
    if voters:
        # Kafka 4 prints JSON objects with "id"; older versions print a plain list.
        text = voters.group(1)
        ids = re.findall(r'"id":\s*(\d+)', text) or re.findall(r"\d+", text)
        voter_ids = tuple(sorted(int(i) for i in ids))
    if leader is None or int(leader.group(1)) < 0:
        return None, voter_ids, "no leader elected (fewer than a majority of voters up?)"
    return int(leader.group(1)), voter_ids, None


def wait_in_sync(
    settings: Settings,
    timeout: float,
    *,
    progress: Callable[[str], None] = log.info,
    every: float = 5.0,
) -> ClusterHealth:
    """Return once every partition has all its replicas in sync and a leader.

    Raises ``TimeoutError`` naming the partitions still behind after ``timeout``.
    """
    began = time.monotonic()
    said = began - every
    while True:
        health = cluster_health(settings, quorum=False)
        if health.in_sync:
            return health
        waited = time.monotonic() - began
        if waited > timeout:
            behind = [p.describe() for p in [*health.offline, *health.under_replicated]][:10]
            raise TimeoutError(
                f"partitions not in sync after {timeout:.0f} s: "
                + ("; ".join(behind) or (health.error or "?"))
            )
        if time.monotonic() - said >= every:
            said = time.monotonic()
            progress(
                f"waiting for replicas to catch up: {len(health.under_replicated)} "
                f"under-replicated, {len(health.offline)} offline ({waited:.0f} s)"
            )
        time.sleep(0.5)
