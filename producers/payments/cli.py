"""`riverbed produce payments`: generate payments and publish them to Kafka."""

from __future__ import annotations

import logging
import secrets
import time

from producers.kafka_loop import ProduceSummary, ProgressCallback
from producers.payments.generator import PaymentsGenerator
from producers.payments.population import GeneratorConfig
from producers.runner import publish_generated
from riverbed.settings import Settings
from riverbed.topics import PAYMENTS_TRANSACTIONS

log = logging.getLogger("riverbed.producer")


def produce_payments(
    settings: Settings,
    *,
    rate: float | None,
    count: int | None,
    duration: float | None,
    seed: int | None,
    topic: str = PAYMENTS_TRANSACTIONS,
    progress: ProgressCallback | None = None,
    producer_overrides: dict[str, str] | None = None,
    serve_metrics: bool = False,
) -> ProduceSummary:
    """Generate payments and publish them to Kafka until ``count`` or ``duration``.

    ``serve_metrics``: serve :mod:`producers.metrics` to Prometheus while it runs
    (``riverbed produce`` does).

    ``rate`` None takes ``settings.producer_rate``; 0 means as fast as possible.
    ``seed`` None draws one; it is in the summary so a run can be reproduced.
    """
    if seed is None:
        seed = secrets.randbits(32)
    events_per_s = settings.producer_rate if rate is None else rate
    config = GeneratorConfig.from_settings(settings)
    # Unthrottled, event time simply follows the wall clock; the nominal rate
    # only spaces events between two reads of it.
    nominal = events_per_s if events_per_s > 0 else settings.producer_rate
    _warn_if_cards_cannot_rest(config, events_per_s)
    generator = PaymentsGenerator(
        config, seed=seed, start=time.time(), rate=nominal, wall_clock=time.time
    )
    log.info("producing payments to %s with seed %d", topic, seed)
    return publish_generated(
        settings,
        generator.pairs(),
        domain="payments",
        topic=topic,
        seed=seed,
        rate=events_per_s,
        count=count,
        duration=duration,
        progress=progress,
        producer_overrides=producer_overrides,
        serve_metrics=serve_metrics,
    )


def _warn_if_cards_cannot_rest(config: GeneratorConfig, events_per_s: float) -> None:
    """Say so when normal traffic will trip velocity alerts: too few cards for the rate."""
    limit = config.max_sustainable_rate
    advice = (
        "%s: above %.0f events/s, %d cards cannot rest %.1f s between uses and normal "
        "traffic trips velocity alerts (raise RIVERBED_PRODUCER_CARDS)"
    )
    if events_per_s <= 0:
        log.info(advice, "unthrottled", limit, config.cards, config.card_gap_s)
    elif events_per_s > limit:
        log.warning(advice, f"{events_per_s:.0f} events/s", limit, config.cards, config.card_gap_s)
