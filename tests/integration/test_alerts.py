"""Riverbed's alerting rules fire when their conditions are caused for real: on the
three-node test cluster, a producer sending many malformed events to a flow, then the
flow killed (its group falls behind, the lake's last commit gets old) and one node
killed. One Prometheus watches all of it, so the rules' waiting times ("for") overlap
instead of adding up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from riverbed import lake
from riverbed.broker import LocalCluster
from riverbed.kafka_admin import recreate_topics
from riverbed.settings import load_settings
from riverbed.topics import PAYMENTS_TRANSACTIONS
from tests.support.env import free_port
from tests.support.faults import Supervised, kill_nodes
from tests.support.flow_harness import REPO
from tests.support.lake_fixture import txns
from tests.support.monitoring import firing, query, running_prometheus, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.fault]

EXPECTED = {
    "KafkaBrokerDown",
    "KafkaUnderReplicatedPartitions",
    "RiverbedLagGrowing",
    "RiverbedLakeNotFresh",
    "RiverbedFlowDown",
    "RiverbedDeadLetterSpike",
}


def test_each_alert_fires_when_its_condition_is_caused(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    settings = load_settings(
        home=tmp_path / "riverbed",
        kafka_port=cluster.settings.kafka_port,
        kafka_brokers=3,
        kafka_dist=cluster.settings.kafka_dist,
        consumer_group=f"riverbed.payments.alerts-{uuid.uuid4().hex[:8]}",
        prometheus_port=free_port(),
        lag_threshold=50,
        freshness_threshold_s=5,
    )
    recreate_topics(settings)
    # A lake whose newest commit is already older than the freshness threshold by the
    # time Prometheus first sees it.
    writer = lake.TableWriter(settings.lake_dir, "transactions")
    app = lake.app_id(PAYMENTS_TRANSACTIONS, 0)
    writer.claim([app])
    writer.append(txns(range(10)), {app: 10})

    # Every interval and every rule's "for" a third as long as `make run` has them: the
    # same rules, on a faster clock (30 s of a condition become 10 s).
    with running_prometheus(settings, time_scale=3):
        assert wait_for(settings, 'count(up{job="kafka"} == 1) == 3')
        assert firing(settings) == set()  # nothing fires before its condition holds long enough
        # A producer of which a third of the events are malformed, and a flow that sends
        # them to the dead-letter topic until Prometheus has seen the share.
        producer = subprocess.Popen(
            [sys.executable, "-m", "riverbed.cli", "produce", "payments", "--rate", "50"],
            env={**os.environ, **settings.to_env(), "RIVERBED_PRODUCER_INVALID_SHARE": "0.3"},
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        flow = Supervised(settings, tmp_path / "flow.log").start()
        try:
            flow.run_until(
                lambda: bool(query(settings, "riverbed:flow_dead_letter_share:rate5m > 0.2")),
                120,
                "Prometheus to see the dead-letter share",
            )
            # Down, as a crash leaves it (its target stays registered): from now on its
            # group's lag grows and the lake's newest commit ages.
            flow.signal(signal.SIGKILL)
            kill_nodes(cluster, 3)  # the cluster's fixture starts it again for the next test
            deadline = time.monotonic() + 150
            while (fired := firing(settings)) < EXPECTED:
                assert time.monotonic() < deadline, f"not firing: {EXPECTED - fired}"
                time.sleep(2)
        finally:
            flow.stop()  # reaps the killed processes (or stops them if the wait failed)
            producer.terminate()  # flushes, then exits
            producer.wait(60)
        # The node that is down, by name.
        (down,) = wait_for(settings, 'ALERTS{alertname="KafkaBrokerDown",alertstate="firing"}')
        assert down["metric"]["node"] == "3"
