"""Where a flow without a snapshot starts: the older of the lake's and the group's
offsets, and a warning that names the partitions when the group is ahead of the lake
(a deleted or moved lake, or a group that served another lake)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from flows.kit.kafka_source import consumer_config
from flows.kit.start_offsets import resume_offsets
from riverbed import lake
from riverbed.settings import Settings, load_settings
from riverbed.topics import PAYMENTS_TRANSACTIONS
from tests.support.flow_harness import generate, produce
from tests.support.lake_fixture import txns

pytestmark = pytest.mark.kafka


def commit_group(settings: Settings, offsets: dict[int, int]) -> None:
    consumer = Consumer(consumer_config(settings))
    try:
        consumer.commit(
            offsets=[TopicPartition(PAYMENTS_TRANSACTIONS, p, o) for p, o in offsets.items()],
            asynchronous=False,
        )
    finally:
        consumer.close()


def test_a_group_ahead_of_the_lake_is_named_and_the_lake_side_wins(
    kafka_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(
        **{**kafka_settings.model_dump(exclude_none=True), "home": tmp_path / "riverbed"}
    )
    produce(settings, generate(600, seed=3))
    commit_group(settings, {0: 40, 1: 30})
    writer = lake.TableWriter(settings.lake_dir, "transactions")
    app = lake.app_id(PAYMENTS_TRANSACTIONS, 1)
    writer.claim([app])
    writer.append(txns(range(30), partition=1), {app: 30})  # partition 1: level with the group

    with caplog.at_level(logging.WARNING, logger="riverbed.flow.source"):
        starts = resume_offsets(
            settings, PAYMENTS_TRANSACTIONS, [0, 1, 2], ("payments", "transactions")
        )
    assert starts == {0: 0, 1: 30, 2: 0}
    (warning,) = [r for r in caplog.records if "ahead of the lake" in r.getMessage()]
    assert warning.partitions == {0: {"lake": 0, "group": 40}}
    assert "RIVERBED_CONSUMER_GROUP" in warning.getMessage()

    caplog.clear()
    app = lake.app_id(PAYMENTS_TRANSACTIONS, 0)
    writer.claim([app])
    writer.append(txns(range(40), partition=0), {app: 40})  # the lake filled again
    with caplog.at_level(logging.WARNING, logger="riverbed.flow.source"):
        assert resume_offsets(
            settings, PAYMENTS_TRANSACTIONS, [0, 1, 2], ("payments", "transactions")
        ) == {0: 40, 1: 30, 2: 0}
    assert not [r for r in caplog.records if "ahead of the lake" in r.getMessage()]


def test_a_transaction_left_open_by_a_killed_run_does_not_hold_up_the_start(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """A run killed inside a Kafka transaction leaves its consumed offsets pending until
    the broker aborts it (transaction.timeout.ms). The next run's start must not wait for
    that: it takes the offsets last committed, which are never above the truth."""
    settings = load_settings(
        **{**kafka_settings.model_dump(exclude_none=True), "home": tmp_path / "riverbed"}
    )
    produce(settings, generate(600, seed=4))
    commit_group(settings, {0: 40})
    writer = lake.TableWriter(settings.lake_dir, "transactions")
    app = lake.app_id(PAYMENTS_TRANSACTIONS, 0)
    writer.claim([app])
    writer.append(txns(range(60), partition=0), {app: 60})

    # The killed run: offsets 60 sent in a transaction that stays open (for 5 minutes,
    # longer than the start's own wait of 90 s for stable offsets).
    killed = Producer(
        {
            **settings.kafka_client_config("flows"),
            "transactional.id": f"test-killed-{settings.consumer_group}",
            "transaction.timeout.ms": 300_000,
        }
    )
    killed.init_transactions(30)
    killed.begin_transaction()
    group = Consumer(consumer_config(settings))
    try:
        killed.send_offsets_to_transaction(
            [TopicPartition(PAYMENTS_TRANSACTIONS, 0, 60)], group.consumer_group_metadata(), 30
        )
        starts = resume_offsets(settings, PAYMENTS_TRANSACTIONS, [0], ("payments", "transactions"))
        assert starts == {0: 40}
    finally:
        killed.abort_transaction(30)
        group.close()
