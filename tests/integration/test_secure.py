"""Secured mode on a real three-node cluster: SASL/SCRAM-SHA-512 over TLS, a user per
role, ACLs (riverbed.kafka_security).

One end-to-end run (the producer's CLI, the flow as deployed, Dagster's topic assets)
checked against the topic read back, and what must be refused: a wrong password, and
each user stepping outside its job.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psutil
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from orchestration.defs.kafka.assets import kafka_topics
from orchestration.lib.settings import RiverbedResource
from riverbed.broker import LocalCluster
from riverbed.kafka_admin import recreate_topics
from riverbed.kafka_security import USERS, secrets_of
from riverbed.settings import Settings, SettingsError, load_settings
from riverbed.topics import PAYMENTS_ALERTS, PAYMENTS_TRANSACTIONS
from tests.support.env import use_settings
from tests.support.faults import Supervised
from tests.support.flow_harness import REPO, drained, query, read_topic, scan
from tests.support.topic_reader import valid_transaction_id

pytestmark = pytest.mark.kafka

EVENTS = 3000


def secret_values(settings: Settings) -> list[str]:
    found = secrets_of(settings)
    return [found.password(u) for u in USERS] + [found.keystore_password.read_text().strip()]


def cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "riverbed.cli", *args],
        env={**os.environ, **settings.to_env(), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def leaks(text: str, secrets: list[str]) -> list[str]:
    return [f"{s[:3]}..." for s in secrets if s in text]


def test_a_secured_run_lands_every_event_once_and_no_secret_shows(
    secure_cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = secure_cluster.settings
    secrets = secret_values(settings)
    recreate_topics(settings)

    produced = cli(settings, "produce", "payments", "--count", str(EVENTS), "--rate", "3000")
    assert produced.returncode == 0, produced.stdout + produced.stderr
    assert f"delivered {EVENTS:,}, failed 0" in produced.stdout

    flow = Supervised(settings, tmp_path / "flow.log").start()
    try:
        flow.run_until(drained(settings), timeout=180, what="the flow to drain the topic")
        # Secrets are in no command line and no environment of the flow's processes
        # (the CLI and its Bytewax workers) or of the brokers.
        group = [p for p in psutil.process_iter() if _session_of(p) == flow._procs[0].pid]
        assert len(group) >= 2, "expected the flow's CLI and at least one worker"
        brokers = [psutil.Process(pid) for pid in secure_cluster.status().pids.values()]
        for process in group + brokers:
            shown = (
                " ".join(process.cmdline())
                + "\n"
                + "\n".join(f"{k}={v}" for k, v in process.environ().items())
            )
            assert leaks(shown, secrets) == [], f"a secret in pid {process.pid}'s cmdline/env"
    finally:
        flow.stop()
    assert flow.restarts == 0

    # The oracle: the valid transactions of the topic, read back by the admin user.
    expected = {
        valid_transaction_id(m.value(), m.timestamp()[1])
        for m in read_topic(settings, PAYMENTS_TRANSACTIONS)
    } - {None}
    rows = query(
        f"select transaction_id, count(*) from {scan(settings, 'transactions')} group by 1"
    )
    assert [r for r in rows if r[1] > 1] == []
    assert {r[0] for r in rows} == expected
    assert len(expected) > EVENTS * 0.9

    # Dagster's topic assets work as the admin user and record no secret.
    use_settings(monkeypatch, settings)
    result = dg.materialize([kafka_topics], resources={"riverbed": RiverbedResource()})
    assert result.success
    assert leaks(repr(result.all_events), secrets) == []

    logs = [tmp_path / "flow.log"] + [
        path for node in secure_cluster.nodes for path in (node.server_log, node.console_log)
    ]
    for path in logs:
        assert leaks(path.read_text(errors="replace"), secrets) == [], f"a secret in {path}"
    assert leaks(produced.stdout + produced.stderr, secrets) == []


def _session_of(process: psutil.Process) -> int | None:
    try:
        return os.getsid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


def test_a_wrong_password_is_refused_at_once_with_a_clear_error(
    secure_cluster: LocalCluster, tmp_path: Path
) -> None:
    wrong = tmp_path / "password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    done = cli(
        secure_cluster.settings,
        "produce",
        "payments",
        "--count",
        "10",
        RIVERBED_KAFKA_SASL_PASSWORD_FILE=str(wrong),
    )
    assert done.returncode == 1
    assert "delivered 0, failed 10" in done.stdout
    assert "Kafka refused this producer" in done.stdout
    assert "Authentication failed" in done.stdout
    # Not after waiting out the delivery timeout: the summary says it stopped as refused.
    assert "RIVERBED_KAFKA_SASL_PASSWORD_FILE" in done.stderr


def as_user(settings: Settings, user: str) -> dict[str, str]:
    return load_settings(**{**_fields(settings), "kafka_sasl_username": user}).kafka_client_config()


def _fields(settings: Settings) -> dict[str, object]:
    return {k: v for k, v in settings.model_dump().items() if v is not None}


def delivery_error(config: dict[str, str], topic: str) -> KafkaError | None:
    errors: list[KafkaError | None] = []
    producer = Producer({**config, "message.timeout.ms": 20_000})
    producer.produce(topic, b"{}", on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(30) == 0
    return errors[0]


def test_each_user_may_do_its_own_job_only(secure_cluster: LocalCluster) -> None:
    settings = secure_cluster.settings
    recreate_topics(settings)
    producer, flows = as_user(settings, "producer"), as_user(settings, "flows")

    # The producer writes transactions, and nothing else.
    assert delivery_error(producer, PAYMENTS_TRANSACTIONS) is None
    refused = delivery_error(producer, PAYMENTS_ALERTS)
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # The flows read transactions and write alerts, but do not write transactions.
    assert delivery_error(flows, PAYMENTS_ALERTS) is None
    refused = delivery_error(flows, PAYMENTS_TRANSACTIONS)
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # The producer may not read as a consumer group.
    consumer = Consumer({**producer, "group.id": settings.consumer_group})
    try:
        consumer.subscribe([PAYMENTS_TRANSACTIONS])
        codes = set()
        for _ in range(40):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is not None:
                codes.add(msg.error().code())
            if codes & {
                KafkaError.GROUP_AUTHORIZATION_FAILED,
                KafkaError.TOPIC_AUTHORIZATION_FAILED,
            }:
                break
        assert codes & {
            KafkaError.GROUP_AUTHORIZATION_FAILED,
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
        }, codes
    finally:
        consumer.close()

    # Neither may change the cluster: creating a topic is the admin's.
    for config in (producer, flows):
        admin = AdminClient(config)  # kept: a client garbage-collected aborts its calls
        future = admin.create_topics([NewTopic("riverbed.not-allowed", 1, 1)])
        with pytest.raises(KafkaException) as caught:
            future["riverbed.not-allowed"].result(timeout=30)
        assert caught.value.args[0].code() in {
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        }


def test_a_plaintext_client_of_the_secured_cluster_is_told_to_set_secure(
    secure_cluster: LocalCluster,
) -> None:
    plain = load_settings(**{**_fields(secure_cluster.settings), "kafka_secure": False})
    with pytest.raises(SettingsError, match="RIVERBED_KAFKA_SECURE=true"):
        plain.kafka_client_config()
