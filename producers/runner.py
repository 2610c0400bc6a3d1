"""What every ``riverbed produce <domain>`` does once its generator is made: publish
the messages with the shared loop (:func:`producers.kafka_loop.produce`), serve the
producer's metrics while it runs, and put the seed in the summary."""

from __future__ import annotations

import contextlib
from dataclasses import replace

from producers import metrics
from producers.kafka_loop import (
    Messages,
    ProduceSummary,
    ProgressCallback,
    SendCounts,
    produce,
    producer_config,
)
from riverbed.settings import Settings


def publish_generated(
    settings: Settings,
    messages: Messages,
    *,
    domain: str,
    topic: str,
    seed: int,
    rate: float,
    count: int | None,
    duration: float | None,
    progress: ProgressCallback | None = None,
    producer_overrides: dict[str, str] | None = None,
    serve_metrics: bool = False,
) -> ProduceSummary:
    """Publish ``messages`` to ``topic`` at ``rate`` (0: as fast as possible) until
    ``count`` or ``duration``; with ``serve_metrics``, serve :mod:`producers.metrics`
    to Prometheus meanwhile, as the target ``<domain>-<pid>``."""
    counts = SendCounts()
    with contextlib.ExitStack() as serving:
        if serve_metrics:
            serving.enter_context(
                metrics.serving(settings, counts, domain=domain, topic=topic, rate=rate)
            )
        summary = produce(
            messages,
            topic=topic,
            config=producer_config(settings, producer_overrides),
            rate=rate if rate > 0 else None,
            count=count,
            duration=duration,
            progress=progress,
            counts=counts,
        )
    return replace(summary, seed=seed)
