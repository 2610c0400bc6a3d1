"""Riverbed's log lines: logfmt, and librdkafka's own lines routed through it."""

from __future__ import annotations

import logging
import re
import time

import pytest
from confluent_kafka import KafkaException, Producer

from producers.kafka_loop import SendCounts, counting_producer, producer_config
from riverbed import kafka_admin
from riverbed.features import features_producer
from riverbed.logs import LibrdkafkaLog, LogfmtFormatter
from riverbed.settings import Settings, load_settings
from tests.support.env import free_port


def test_a_kafka_clients_own_lines_come_out_as_riverbed_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real client with nothing listening at its broker's address: librdkafka's
    "connection refused" reaches the flow's logger (served by poll), not raw stderr."""
    caplog.set_level(logging.DEBUG, logger="test.kafka.client")
    producer = Producer(
        {
            "bootstrap.servers": f"127.0.0.1:{free_port()}",
            "logger": LibrdkafkaLog("test.kafka.client"),
        }
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not caplog.records:
        producer.poll(0.2)
    records = [r for r in caplog.records if r.name == "test.kafka.client"]
    assert records, "no librdkafka line reached the logger"
    line = LogfmtFormatter().format(records[0])
    assert line.startswith("ts=") and "logger=test.kafka.client" in line
    assert "Connection refused" in line and records[0].levelno >= logging.WARNING


def test_retries_librdkafka_makes_by_itself_are_info_not_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.kafka.client")
    sink = LibrdkafkaLog("test.kafka.client")
    # As confluent-kafka calls it: logger.log(level, "%s [%s] %s", facility, client, text).
    sink.log(
        logging.WARNING,
        "%s [%s] %s",
        "GETPID",
        "rdkafka#producer-1",
        "[thrd:main]: Failed to acquire transactional PID from broker TxnCoordinator/3: "
        "Broker: Not coordinator: retrying",
    )
    sink.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", "[thrd:main]: down")
    assert [(r.levelno, r.getMessage().split()[0]) for r in caplog.records] == [
        (logging.INFO, "GETPID"),
        (logging.ERROR, "FAIL"),
    ]


def test_a_quiet_client_logs_every_line_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    """riverbed.kafka_admin.quiet_admin: refused connections to a starting node are
    expected there, even the ones librdkafka reports as errors."""
    caplog.set_level(logging.DEBUG, logger="test.kafka.quiet")
    sink = LibrdkafkaLog("test.kafka.quiet", at=logging.DEBUG)
    sink.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#admin-1", "Connection refused")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "FAIL [rdkafka#admin-1] Connection refused")
    ]


# -- every Kafka client Riverbed makes outside the flows: no raw librdkafka line --------

RAW_LINE = re.compile(r"^%\d\|", re.MULTILINE)


def _nothing_listening() -> Settings:
    return load_settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")


def _refused(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "riverbed.kafka.client" and "Connection refused" in r.getMessage()
    ]


@pytest.mark.parametrize("client", ["admin", "offsets reader"])
def test_the_admin_and_offset_clients_hand_their_lines_over(
    client: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """The admin client hands them over at each metadata call; the consumers behind
    high_watermarks and consumer_lag (Dagster's lag sensor) when they are closed."""
    caplog.set_level(logging.DEBUG, logger="riverbed.kafka.client")
    settings = _nothing_listening()
    if client == "admin":
        admin = kafka_admin.admin_client(settings)
        with pytest.raises(KafkaException):
            kafka_admin.cluster_metadata(admin, timeout=1.5)
    else:
        consumer = kafka_admin._admin_consumer(settings)
        with pytest.raises(KafkaException):
            kafka_admin.cluster_metadata(consumer, timeout=1.5)
        kafka_admin.close_polled(consumer)
    assert _refused(caplog)
    assert not RAW_LINE.search(capfd.readouterr().err)


@pytest.mark.parametrize("made_by", ["riverbed produce", "features"])
def test_the_producers_lines_come_out_in_their_polls(
    made_by: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="riverbed.kafka.client")
    settings = _nothing_listening()
    if made_by == "features":
        producer = features_producer(settings)
    else:
        producer, _, _ = counting_producer(producer_config(settings), SendCounts())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _refused(caplog):
        producer.poll(0.2)
    assert _refused(caplog)
    assert not RAW_LINE.search(capfd.readouterr().err)
