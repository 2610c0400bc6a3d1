"""`topics apply` against the real broker: create, converge, report drift."""

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from riverbed.kafka_admin import apply_topics, delete_topics, describe_topics, high_watermarks
from riverbed.settings import Settings
from riverbed.topics import CATALOG, PAYMENTS_TRANSACTIONS, TopicSpec

pytestmark = pytest.mark.kafka


def test_declared_topics_exist_as_declared(kafka_settings: Settings) -> None:
    states = describe_topics(
        AdminClient(kafka_settings.kafka_client_config()), [s.name for s in CATALOG]
    )
    for spec in CATALOG:
        state = states[spec.name]
        assert state.partitions == spec.partitions
        for key, value in spec.configs.items():
            assert state.configs[key] == value
    assert len(high_watermarks(kafka_settings, PAYMENTS_TRANSACTIONS)) == 6


def test_apply_twice_changes_nothing_the_second_time(kafka_settings: Settings) -> None:
    second = apply_topics(kafka_settings)
    assert [r.actions for r in second] == [[] for _ in CATALOG]
    assert all(r.ok for r in second)


def test_apply_converges_and_reports_what_it_cannot_change(kafka_settings: Settings) -> None:
    admin = AdminClient(kafka_settings.kafka_client_config())
    # Left by an interrupted earlier run on the session's broker.
    delete_topics(admin, ["riverbed.test.grow", "riverbed.test.shrink", "riverbed.test.new"])
    for future in admin.create_topics(
        [
            NewTopic("riverbed.test.grow", 2, 1, config={"retention.ms": "1000"}),
            NewTopic("riverbed.test.shrink", 4, 1),
        ]
    ).values():
        future.result()
    specs = [
        TopicSpec("riverbed.test.grow", "test", 5, "grows", {"retention.ms": "60000"}),
        TopicSpec("riverbed.test.shrink", "test", 2, "cannot shrink"),
        TopicSpec("riverbed.test.new", "test", 3, "new"),
    ]
    try:
        results = {r.name: r for r in apply_topics(kafka_settings, specs)}
        grow, shrink, new = (results[s.name] for s in specs)
        assert grow.actions == ["partitions 2 -> 5", "set retention.ms=60000"], grow
        assert grow.state is not None and grow.state.partitions == 5
        assert grow.state.configs["retention.ms"] == "60000"
        assert shrink.actions == [] and shrink.error is None
        assert shrink.drift == ["has 4 partitions, declared 2 (Kafka cannot remove partitions)"]
        assert new.actions == ["created with 3 partitions"]

        again = {r.name: r for r in apply_topics(kafka_settings, specs)}
        assert [again[s.name].actions for s in specs] == [[], [], []]
        assert again["riverbed.test.shrink"].drift == shrink.drift
    finally:
        for future in admin.delete_topics([s.name for s in specs]).values():
            future.result()
