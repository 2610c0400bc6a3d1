"""The producer's metrics while `riverbed produce` runs, against the session's broker."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from producers.payments import produce_payments
from riverbed.settings import Settings
from tests.support.flow_harness import end_offsets
from tests.support.monitoring import Samples, check_metrics, exposition, parse_samples, total

pytestmark = pytest.mark.kafka


def test_a_running_producer_serves_what_it_sent_and_the_cluster_acknowledged(
    kafka_settings: Settings,
) -> None:
    done: list = []
    run = threading.Thread(
        target=lambda: done.append(
            produce_payments(
                kafka_settings, rate=400, count=None, duration=6, seed=3, serve_metrics=True
            )
        )
    )
    run.start()
    targets = kafka_settings.home / "prometheus" / "targets" / "producer"
    seen: list[Samples] = []
    text = ""
    while run.is_alive():
        for target in targets.glob("*.json"):
            # Registered a moment before serving, or just stopped: no sample.
            with contextlib.suppress(OSError, ValueError):
                text = exposition(target)
                seen.append(parse_samples(text))
        time.sleep(0.5)
    run.join()
    summary = done[0]
    assert summary.ok
    assert len(seen) >= 5, "the producer's metrics were not served while it ran"
    check_metrics(text)
    for sample in seen:
        # Never more acknowledged than sent, nothing failed, the asked rate.
        assert (
            0
            <= total(sample, "riverbed_producer_delivered_total")
            <= total(sample, "riverbed_producer_sent_total")
        )
        assert total(sample, "riverbed_producer_failed_total") == 0
        assert total(sample, "riverbed_producer_target_rate_events_per_second") == 400
    deliveries = [total(s, "riverbed_producer_delivered_total") for s in seen]
    assert deliveries == sorted(deliveries) and deliveries[-1] > 0  # a counter: it only grows
    assert deliveries[-1] <= sum(end_offsets(kafka_settings).values()) == summary.delivered
    assert not list(targets.glob("*.json")), "the target outlived the producer"
