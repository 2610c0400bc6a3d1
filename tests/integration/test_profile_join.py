"""The flow joins every transaction with its card's profile (payments.card_profiles,
published by the batch layer's own publisher) as of the transaction's place in the
stream, and raises profile_amount alerts for amounts far above it. The oracle is
plain Python over the input: which transactions came after their card's profile and
exceed max(mean + 4 std, 3 mean, the spike minimum)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import polars as pl
import pytest

from flows.payments.fraud import PROFILE_AMOUNT
from producers.payments import GeneratedEvent
from riverbed import features
from riverbed.settings import Settings
from riverbed.topics import PAYMENTS_ALERTS, PAYMENTS_CARD_PROFILES
from tests.support.flow_harness import drained, produce, read_topic, run_until
from tests.support.transactions import VALID_TRANSACTION

pytestmark = pytest.mark.kafka

CARDS = [f"card-{i:02d}" for i in range(24)]
PROFILED = CARDS[:16]  # the rest have no profile
MEAN, STD = 20.0, 5.0


def events(tag: str, at_ms: int, amounts: list[float]) -> tuple[list[GeneratedEvent], list[dict]]:
    """One transaction per card and amount, all stamped ``at_ms`` (event time 1 s before)."""
    out, rows = [], []
    event_time = datetime.fromtimestamp(at_ms / 1000 - 1, UTC).isoformat()
    for card in CARDS:
        for n, amount in enumerate(amounts):
            body = {
                **VALID_TRANSACTION,
                "transaction_id": f"{tag}-{card}-{n}",
                "card_id": card,
                "amount": amount,
                "event_time": event_time,
            }
            value = json.dumps(body).encode()
            out.append(GeneratedEvent(card.encode(), value, body["transaction_id"], card, 0.0))
            rows.append({**body, "ts_ms": at_ms})
    return out, rows


def test_profiles_apply_to_the_transactions_after_them(kafka_settings: Settings) -> None:
    settings = kafka_settings
    now_ms = int(time.time() * 1000)
    # Before the profiles: stamped a minute ago. After: stamped by the producer now.
    before, before_rows = events("before", now_ms - 60_000, [900.0, 501.0, 30.0])
    produce(settings, before, timestamps_ms=[now_ms - 60_000] * len(before))
    profiles = pl.DataFrame(
        {
            "card_id": PROFILED,
            "txn_count": [30] * len(PROFILED),
            "home_country": ["FR"] * len(PROFILED),
            "amount_mean": [MEAN] * len(PROFILED),
            "amount_std": [STD] * len(PROFILED),
            "usual_hours": [[12]] * len(PROFILED),
            "usual_mccs": [["5411"]] * len(PROFILED),
            "last_event_time": [datetime.now(UTC)] * len(PROFILED),
        },
        schema=features.PROFILE_SCHEMA,
    )
    published = features.publish_card_profiles(settings, profiles)
    assert published.profiles == len(PROFILED)
    profiled_at_ms = max(m.timestamp()[1] for m in read_topic(settings, PAYMENTS_CARD_PROFILES))
    time.sleep(0.05)
    after, after_rows = events("after", int(time.time() * 1000), [900.0, 501.0, 499.0, 30.0])
    produce(settings, after)

    run_until(settings, drained(settings), timeout=180, what="the flow to drain the topic")

    limit = max(MEAN + 4 * STD, 3 * MEAN, 500.0)  # the settings' defaults
    oracle = {
        r["transaction_id"]
        for r in before_rows + after_rows
        if r["card_id"] in PROFILED and r["ts_ms"] >= profiled_at_ms and r["amount"] > limit
    }
    assert len(oracle) == len(PROFILED) * 2  # 900 and 501 of every profiled card, after
    alerts = [json.loads(m.value()) for m in read_topic(settings, PAYMENTS_ALERTS)]
    raised = {a["transaction_id"] for a in alerts if a["rule"] == PROFILE_AMOUNT}
    assert raised == oracle
    assert len([a for a in alerts if a["rule"] == PROFILE_AMOUNT]) == len(oracle)  # once each
