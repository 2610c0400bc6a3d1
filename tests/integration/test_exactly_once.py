"""Exactly-once under kill -9 and under Ctrl-C / SIGTERM, against the real broker.

Generated transactions (valid, invalid, late, resent, fraud) are produced while the
flow runs with recovery; the flow is stopped at random moments several times and
restarted each time, then runs until it has caught up:

* SIGKILL (~100,000 events, one process and ``--processes 2``): a crash anywhere;
* SIGINT or SIGTERM to the flow's whole process group (what Ctrl-C and ``docker stop``
  do), half of them while Bytewax is still building the partitions: each stop must be
  clean (exit 0, no traceback).

The result must be as if nothing had happened:

* every valid transaction is in the lake's Delta table exactly once;
* every invalid message is in the DLQ exactly once, bytes unchanged;
* the alerts (topic and lake) are those of an uninterrupted run of the same
  logic over the same input (the partition processors run in this process);
* merchant_minute equals an aggregation of the input computed here with DuckDB;
* the consumer group's offsets, and the lake's Delta application transactions, are at
  the end of the topic, and every data file the Delta log lists exists.

Runs with ``RIVERBED_TEST_BOOTSTRAP=host:port`` against an existing broker, or
with the session broker of ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import psutil
import pyarrow as pa
import pytest

from flows.kit.status import read_status
from flows.payments import ensure_recovery_store, flow_dir
from flows.payments.config import FlowConfig
from flows.payments.records import AlertRecord
from producers.payments import GeneratedEvent
from riverbed import lake
from riverbed.settings import Settings, load_settings
from riverbed.topics import PAYMENTS_ALERTS, PAYMENTS_DLQ, PAYMENTS_TRANSACTIONS
from tests.support.flow_harness import (
    Record,
    committed_offsets,
    end_offsets,
    generate,
    lake_offsets,
    log_tail,
    produce,
    query,
    read_records,
    read_topic,
    reference_alerts,
    scan,
    start_flow,
    stop_flow,
    wait_exited,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# 100,000 events over 15 s: the flow is killed KILLS times (the first right after its
# first flush, the others at random moments 2-8 s into a run) while they arrive and
# while it catches up; a longer input only added kills of the same kind.
EVENTS = 100_000
PRODUCE_SECONDS = 15.0
KILLS = 4
# The clean stops' input: enough for more than 100 reference alerts.
STOPS_EVENTS = 50_000
SEED = 20261125


def alert_fact(alert_id: str, rule: str, card: str, txn: str, event_us: int, score: float,
               details: str) -> tuple:  # fmt: skip
    return (alert_id, rule, card, txn, event_us, round(score, 6), details)


# -- the test ---------------------------------------------------------------------------


@pytest.mark.parametrize("processes", [1, 2])
def test_exactly_once_through_sigkills(
    kafka_settings: Settings, tmp_path: Path, processes: int
) -> None:
    settings = flow_test_settings(kafka_settings)
    rng = random.Random(SEED + processes)
    events = generate(EVENTS, SEED)

    def stop(procs: list[subprocess.Popen], log: Path, kills: int) -> None:
        if kills == 0:
            # The first kill right after the first flush committed offsets, which is
            # before Bytewax's first snapshot: the restart must not resume at them.
            wait_until(lambda: any(flow_dir(settings).glob("status*.json")), 60,
                       "the first flush", procs, log)  # fmt: skip
        else:
            time.sleep(rng.uniform(2.0, 8.0))
        for proc in procs:
            assert proc.poll() is None, log.read_text()[-4000:]
            proc.send_signal(signal.SIGKILL)
        for proc in procs:
            proc.wait(10)

    run_interrupted(settings, events, tmp_path, stop, stops=KILLS, processes=processes)


def test_ctrl_c_and_sigterm_to_the_process_group_stop_cleanly(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = flow_test_settings(kafka_settings)
    rng = random.Random(SEED - 1)
    events = generate(STOPS_EVENTS, SEED - 1)

    def stop(procs: list[subprocess.Popen], log: Path, stops: int) -> None:
        # Each signal twice: once while Bytewax builds the partitions (0-1.5 s after
        # the run's first source partition opened, while the others open and each
        # sink partition claims its Kafka producer and its place in the lake's commits,
        # ~1 s in all, measured), once while the flow runs (1.5-5 s after it said it
        # started). Not before that line: until then the process is still importing and
        # has no handlers of its own, so a signal ends it the default way (SIGTERM kills
        # it, SIGINT raises in an import) with nothing started to lose, which the SIGKILL
        # test covers. (A fixed 1.5-5 s from launch once landed there on a busy machine.)
        sig = (signal.SIGINT, signal.SIGTERM, signal.SIGTERM, signal.SIGINT)[stops % 4]
        line, low, high = ("reading partition", 0.0, 1.5) if stops % 2 == 0 else (
            "payments flow", 1.5, 5.0)  # fmt: skip
        wait_until(lambda: line in _this_run(log), 60, f"the log line {line!r}", procs, log,
                   interval=0.05)  # fmt: skip
        time.sleep(rng.uniform(low, high))
        for proc in procs:
            assert proc.poll() is None, log.read_text()[-4000:]
        os.killpg(procs[0].pid, sig)  # the whole group, as a terminal or docker does
        codes = wait_exited(procs, log, 30, f"{sig.name} to the process group")
        assert codes == [0] * len(procs), f"{sig.name} did not stop it cleanly:\n{log_tail(log)}"
        text = log.read_text()
        assert "Traceback" not in text and "panicked" not in text, log_tail(log)

    run_interrupted(
        settings, events, tmp_path, stop, stops=4, produce_seconds=10.0, new_session=True
    )


def test_a_stop_while_the_processes_start_is_not_lost(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = flow_test_settings(kafka_settings)
    log = tmp_path / "flow.log"
    [cli] = start_flow(settings, log, new_session=True)
    parent = psutil.Process(cli.pid)
    wait_until(lambda: bool(parent.children()), 60, "the flow's process", [cli], log,
               interval=0.005)  # fmt: skip
    # To `riverbed flow run` alone, as `kill` or a supervisor sends it, while its process
    # is most likely still starting (stop signals ignored until flows.run installs its
    # handlers): it must reach the process anyway, not wait out the 30 s grace and a kill.
    cli.send_signal(signal.SIGTERM)
    codes = wait_exited([cli], log, 45, "a stop sent while the flow's process started")
    text = log.read_text()
    assert codes == [0], log_tail(log)
    assert 'by="riverbed flow run"' in text, log_tail(log)  # through its stop pipe
    assert "stopped: what was in flight is committed" in text, log_tail(log)
    assert "did not stop in time" not in text and "Traceback" not in text, log_tail(log)


def _this_run(log: Path) -> str:
    """The log of the flow run going on (run_interrupted marks where each stop was)."""
    return log.read_text().rsplit("==== stop", 1)[-1]


def flow_test_settings(kafka_settings: Settings) -> Settings:
    return load_settings(
        kafka_bootstrap=kafka_settings.bootstrap_servers,
        consumer_group=kafka_settings.consumer_group,
        home=kafka_settings.home,
        # Flushes more often than snapshots (every 1 s): a replay then re-sends rows the
        # lake already has, which the sinks must skip.
        flush_interval_s=0.4,
        snapshot_interval_s=1,
        flush_rows=3000,
        log_level="INFO",  # flow.log then tells what each restart resumed from and skipped
    )


def run_interrupted(
    settings: Settings,
    events: list[GeneratedEvent],
    tmp_path: Path,
    stop: Callable[[list[subprocess.Popen], Path, int], None],
    *,
    stops: int,
    processes: int = 1,
    produce_seconds: float = PRODUCE_SECONDS,
    new_session: bool = False,
) -> None:
    """Produce ``events`` while the flow runs and is stopped by ``stop`` at least
    ``stops`` times; then let it catch up and check everything against the input."""
    log = tmp_path / "flow.log"
    ensure_recovery_store(settings)
    producing = threading.Thread(
        target=produce,
        args=(settings, events),
        kwargs={"seconds": produce_seconds},
        daemon=True,
    )
    producing.start()
    # The flow starts on a topic that already has data in every partition.
    wait_until(lambda: all(end_offsets(settings).values()), 30, "data in every partition", [], log)

    done = 0
    while done < stops or producing.is_alive():
        procs = start_flow(settings, log, processes=processes, new_session=new_session)
        stop(procs, log, done)
        done += 1
        with open(log, "a") as f:
            f.write(f"\n==== stop {done} ====\n")
        time.sleep(random.uniform(0.0, 1.0))
    producing.join()

    ends = end_offsets(settings, PAYMENTS_TRANSACTIONS)
    partitions = sorted(ends)
    # The last run catches up while this process computes the reference.
    procs = start_flow(settings, log, processes=processes)
    try:
        # Read the input back as the broker stored it: the truth to compare with.
        records = read_records(settings)
        assert len(records) == len(events)
        config = FlowConfig.from_settings(settings)
        truth = {e.value: e for e in events}
        alerts = reference_alerts(records, config)
        expected_windows = expected_merchant_minute(records, truth, config, alerts)

        wait_until(
            lambda: (
                committed_offsets(settings, PAYMENTS_TRANSACTIONS, partitions) == ends
                and lake_offsets(settings) == ends
            ),
            120,
            "the group's and the lake's offsets to reach the end of the topic",
            procs,
            log,
        )
        wait_until(
            lambda: lake_window_count(settings) >= len(expected_windows),
            60,
            "every window to close",
            procs,
            log,
        )
        time.sleep(1.5)  # one more flush: anything still to come would show up now
    finally:
        stop_flow(procs)

    check_transactions(settings, records, truth)
    check_dlq(settings, records, truth)
    check_alerts(settings, alerts)
    check_merchant_minute(settings, expected_windows)
    check_delta_log(settings, ends)
    committed = {}
    for status in read_status(flow_dir(settings)):
        committed.update(status["committed_offsets"])
    assert committed == {f"{PAYMENTS_TRANSACTIONS}/{p}": ends[p] for p in partitions}
    # Each process waited for the lower ones to listen (flows.kit.cluster_start), so
    # none started a second late in Timely's connect retry.
    assert "error connecting to worker" not in log.read_text()


# -- checks ------------------------------------------------------------------------------


def lake_window_count(settings: Settings) -> int:
    sql = (
        "select count(distinct (merchant_id, window_start)) "
        f"from {scan(settings, 'merchant_minute')}"
    )
    return query(sql)[0][0]


def first_valid_offsets(
    records: list[Record], truth: dict[bytes | None, GeneratedEvent]
) -> dict[tuple[int, int], GeneratedEvent]:
    """(partition, offset) of each valid transaction's first copy."""
    seen: set[str] = set()
    out = {}
    for p, o, _k, v, _ts in sorted(records, key=lambda r: (r[0], r[1])):
        event = truth[v]
        if not event.valid or event.transaction_id in seen:
            continue
        seen.add(event.transaction_id)
        out[(p, o)] = event
    return out


def check_transactions(
    settings: Settings, records: list[Record], truth: dict[bytes | None, GeneratedEvent]
) -> None:
    rows = query(
        f"select _partition, _offset, transaction_id from {scan(settings, 'transactions')}"
    )
    where = Counter((p, o) for p, o, _t in rows)
    dupes = [k for k, n in where.items() if n > 1]
    assert not dupes, f"{len(dupes)} offsets twice in the lake, e.g. {dupes[:5]}"
    ids = Counter(t for _p, _o, t in rows)
    assert max(ids.values()) == 1, "a transaction_id is in the lake twice"
    expected = first_valid_offsets(records, truth)
    missing = set(expected) - set(where)
    extra = set(where) - set(expected)
    assert not missing, f"{len(missing)} valid transactions missing, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} unexpected rows, e.g. {sorted(extra)[:5]}"
    for p, o, t in rows[:1000]:
        assert expected[(p, o)].transaction_id == t


def check_dlq(
    settings: Settings, records: list[Record], truth: dict[bytes | None, GeneratedEvent]
) -> None:
    source = {(p, o): (k, v) for p, o, k, v, _ts in records}
    invalid = {(p, o) for p, o, _k, v, _ts in records if not truth[v].valid}
    seen: Counter[tuple[int, int]] = Counter()
    for msg in read_topic(settings, PAYMENTS_DLQ):
        headers = dict(msg.headers() or ())
        assert headers["source.topic"] == PAYMENTS_TRANSACTIONS.encode()
        assert headers["error"], "a DLQ message without a reason"
        where = (int(headers["source.partition"]), int(headers["source.offset"]))
        seen[where] += 1
        assert (msg.key(), msg.value()) == source[where], f"DLQ bytes differ at {where}"
    dupes = [k for k, n in seen.items() if n > 1]
    assert not dupes, f"{len(dupes)} invalid messages in the DLQ twice, e.g. {dupes[:5]}"
    assert set(seen) == invalid, (
        f"DLQ: {len(invalid - set(seen))} missing, {len(set(seen) - invalid)} unexpected"
    )


def check_alerts(settings: Settings, reference: list[AlertRecord]) -> None:
    expected = {
        alert_fact(a.alert_id, a.rule, a.card_id, a.transaction_id, a.event_us, a.score, a.details)
        for a in reference
    }
    assert len(expected) == len(reference) > 100
    published: Counter[tuple] = Counter()
    for msg in read_topic(settings, PAYMENTS_ALERTS):
        body = json.loads(msg.value())
        assert msg.key() == body["card_id"].encode()
        fact = alert_fact(
            body["alert_id"], body["rule"], body["card_id"], body["transaction_id"],
            _micros(body["event_time"]), body["score"], body["details"],
        )  # fmt: skip
        published[fact] += 1
    dupes = [k for k, n in published.items() if n > 1]
    assert not dupes, f"{len(dupes)} alerts published twice, e.g. {dupes[:3]}"
    assert set(published) == expected, (
        f"alerts topic: {len(expected - set(published))} missing, "
        f"{len(set(published) - expected)} unexpected"
    )
    rows = query(
        f"select alert_id, rule, card_id, transaction_id, epoch_us(event_time), score, details "
        f"from {scan(settings, 'alerts')}"
    )
    in_lake = Counter(alert_fact(*r) for r in rows)
    assert max(in_lake.values()) == 1, "an alert is in the lake twice"
    assert set(in_lake) == expected


def _micros(rfc3339: str) -> int:
    moment = datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def expected_merchant_minute(
    records: list[Record],
    truth: dict[bytes | None, GeneratedEvent],
    config: FlowConfig,
    reference: list[AlertRecord],
) -> list[tuple]:
    """merchant_minute from the input alone, in DuckDB: valid first copies, not late
    (older than the partition's latest event time so far minus the allowed lateness)."""
    valid = first_valid_offsets(records, truth)
    table = pa.table(
        {
            "p": [p for p, _o in valid],
            "o": [o for _p, o in valid],
            "value": [v.decode() for p, o, _k, v, _ts in records if (p, o) in valid],
        }
    )
    # Same order as `valid` (both follow the sorted records).
    table = table.sort_by([("p", "ascending"), ("o", "ascending")])
    alerts = pa.table({"transaction_id": [a.transaction_id for a in reference]})
    con = duckdb.connect()
    con.register("input", table)
    con.register("alert_txns", alerts)
    window_us = config.window_us
    lateness_us = config.allowed_lateness_us
    return con.sql(
        f"""
        with parsed as (
            select p, o,
                   json_extract_string(value, '$.transaction_id') as transaction_id,
                   json_extract_string(value, '$.merchant_id') as merchant_id,
                   json_extract_string(value, '$.card_id') as card_id,
                   cast(json_extract_string(value, '$.amount') as decimal(18, 2)) as amount,
                   epoch_us(cast(json_extract_string(value, '$.event_time') as timestamptz))
                       as event_us
            from input
        ),
        judged as (
            select *,
                   max(event_us) over (
                       partition by p order by o
                       rows between unbounded preceding and 1 preceding
                   ) as latest_before
            from parsed
        ),
        on_time as (
            select * from judged
            where latest_before is null or event_us >= latest_before - {lateness_us}
        ),
        alerted as (
            select transaction_id, count(*) as n from alert_txns group by transaction_id
        )
        select merchant_id,
               (event_us // {window_us}) * {window_us} as window_start_us,
               count(*) as txn_count,
               sum(amount) as amount_sum,
               min(amount) as amount_min,
               max(amount) as amount_max,
               count(distinct card_id) as distinct_cards,
               coalesce(sum(alerted.n), 0)::bigint as alert_count
        from on_time left join alerted using (transaction_id)
        group by all
        order by all
        """
    ).fetchall()


def check_merchant_minute(settings: Settings, expected: list[tuple]) -> None:
    rows = query(
        f"""
        select merchant_id, epoch_us(window_start), txn_count, amount_sum, amount_min,
               amount_max, distinct_cards, alert_count, amount_mean
        from {scan(settings, "merchant_minute")}
        order by all
        """
    )
    keys = Counter((r[0], r[1]) for r in rows)
    assert max(keys.values()) == 1, "a window is in the lake twice"
    for r in rows:
        assert abs(r[-1] - float(r[3]) / r[2]) < 1e-9, f"amount_mean of {r}"
    got, want = {r[:-1] for r in rows}, set(expected)
    assert got == want, (
        f"merchant_minute: {len(want - got)} expected rows missing/different, "
        f"{len(got - want)} unexpected, e.g. {sorted(want - got)[:2]} vs {sorted(got - want)[:2]}"
    )


def check_delta_log(settings: Settings, ends: dict[int, int]) -> None:
    """The log says the lake holds every partition to its end, and every file it lists
    is there (nothing half-written is referenced)."""
    table = lake.open_table(settings.lake_dir, "transactions")
    assert lake.stored_offsets(table, PAYMENTS_TRANSACTIONS, ends) == ends
    for dataset in lake.SCHEMAS:
        table = lake.open_table(settings.lake_dir, dataset)
        missing = [
            uri for uri in table.file_uris() if not Path(uri.removeprefix("file://")).exists()
        ]
        assert not missing, f"{dataset}: the log lists files that are not there: {missing[:3]}"
        summary = lake.summary(settings.lake_dir, dataset)
        rows = query(f"select count(*) from {scan(settings, dataset)}")[0][0]
        assert summary is not None and summary.rows == rows
