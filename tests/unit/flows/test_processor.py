"""The partition processor: validation, resends, lateness, determinism, snapshots."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime

from flows.kit.records import RawRecord, SourceBatch
from flows.payments.config import FlowConfig
from flows.payments.processor import PartitionProcessor
from flows.payments.records import ProcessorOutput
from tests.support.transactions import VALID_TRANSACTION

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def txn(i: int, *, seconds: float = 0, card: str = "card-1", **changes: object) -> bytes:
    body = {
        **VALID_TRANSACTION,
        "transaction_id": f"tx-{i}",
        "card_id": card,
        "merchant_id": "merch-1",
        "event_time": datetime.fromtimestamp(NOW.timestamp() + seconds, UTC)
        .isoformat()
        .replace("+00:00", "Z"),
    }
    body.update(changes)
    return json.dumps(body).encode()


def batch(values: list[bytes | None], first_offset: int = 0, ts_ms: int = NOW_MS) -> SourceBatch:
    records: list[RawRecord] = [
        (first_offset + i, b"card-1", v, ts_ms) for i, v in enumerate(values)
    ]
    return SourceBatch(2, records, first_offset + len(values))


def test_invalid_messages_become_dlq_records_with_the_reason() -> None:
    p = PartitionProcessor(2, FlowConfig())
    out = p.process(
        batch([b"{not json", txn(1, amount=-3), txn(2, mcc="54"), None, txn(3)]), 0
    ).batch
    assert [(r.offset, r.key, r.error.split(":")[0]) for r in out.dlq] == [
        (0, b"card-1", "value"),
        (1, b"card-1", "amount"),
        (2, b"card-1", "mcc"),
        (3, b"card-1", "value"),
    ]
    assert out.dlq[0].value == b"{not json", "original bytes, unchanged"
    assert out.rows.offset == [4]
    assert (out.counts.processed, out.counts.invalid, out.counts.valid) == (5, 4, 1)


def test_times_that_cannot_be_converted_to_utc_go_to_the_dlq_named() -> None:
    p = PartitionProcessor(2, FlowConfig())
    values = [txn(1, event_time="9999-12-31T23:59:59-05:00"), txn(2)]
    out = p.process(batch([*values, txn(3, event_time="0001-01-01T00:00:00+01:00")]), 0).batch
    assert [r.offset for r in out.dlq] == [0, 2]
    assert all(r.error.endswith("is out of range in UTC") for r in out.dlq)
    assert out.dlq[0].error.startswith("event_time: ")
    assert out.rows.offset == [1]


def test_the_future_is_judged_by_the_message_timestamp_not_the_wall_clock() -> None:
    in_ten_minutes = txn(1, seconds=600)
    old_ts = NOW_MS - 3_600_000
    assert PartitionProcessor(2, FlowConfig()).process(batch([in_ten_minutes]), 0).batch.dlq
    # Replayed years later: the message's own timestamp still makes it "future".
    replay = PartitionProcessor(2, FlowConfig()).process(batch([txn(1)], ts_ms=old_ts), 0)
    assert replay.batch.dlq and "future" in replay.batch.dlq[0].error
    assert not PartitionProcessor(2, FlowConfig()).process(batch([txn(1)]), 0).batch.dlq


def test_a_resent_transaction_counts_once() -> None:
    p = PartitionProcessor(2, FlowConfig())
    out = p.process(batch([txn(1), txn(2), txn(1), txn(1)]), 0).batch
    assert out.rows.transaction_id == ["tx-1", "tx-2"]
    assert out.counts.resent == 2
    again = p.process(batch([txn(2)], first_offset=10), 0).batch
    assert len(again.rows) == 0 and again.counts.resent == 1


def test_late_events_are_kept_flagged_and_left_out_of_windows() -> None:
    p = PartitionProcessor(2, FlowConfig(allowed_lateness_us=30_000_000))
    out = p.process(batch([txn(1, seconds=0), txn(2, seconds=120), txn(3, seconds=60)]), 0)
    assert out.batch.rows.late == [False, False, True]
    assert out.batch.counts.late == 1
    assert out.merger is not None
    ((delta),) = out.merger.deltas
    assert (delta.count, delta.window_start_us // 60_000_000) == (1, int(NOW.timestamp()) // 60)


def run(values: list[bytes], sizes: list[int]) -> list[ProcessorOutput]:
    p = PartitionProcessor(2, FlowConfig())
    outs, start = [], 0
    for size in sizes:
        outs.append(p.process(batch(values[start : start + size], first_offset=start), 0))
        start += size
    return outs


def facts(outs: list[ProcessorOutput]) -> tuple:
    txns = [
        (t, late)
        for o in outs
        for t, late in zip(o.batch.rows.offset, o.batch.rows.late, strict=True)
    ]
    alerts = [(a.alert_id, a.offset) for o in outs for a in o.batch.alerts]
    deltas: dict[tuple, list] = {}
    for o in outs:
        for d in o.merger.deltas if o.merger else []:
            acc = deltas.setdefault((d.merchant_id, d.window_start_us), [0, 0, 0])
            acc[0] += d.count
            acc[1] += d.sum_cents
            acc[2] += d.alerts
    return txns, alerts, deltas


def test_outputs_do_not_depend_on_how_the_input_is_batched() -> None:
    values = []
    for i in range(60):
        # Bursts (velocity), jumps in time (windows closing) and stragglers (late).
        seconds = (i // 10) * 90 + (i % 10) * 3 - (100 if i % 17 == 0 else 0)
        values.append(txn(i, seconds=seconds, card=f"card-{i % 2}"))
    one = facts(run(values, [60]))
    many = facts(run(values, [1, 7, 13, 2, 20, 17]))
    assert one == many
    assert one[1], "the input raises alerts"
    assert any(late for _o, late in one[0])


def test_a_restored_snapshot_continues_exactly_like_the_original() -> None:
    values = [txn(i, seconds=i * 7, card=f"card-{i % 2}") for i in range(40)]
    p = PartitionProcessor(2, FlowConfig())
    p.process(batch(values[:20]), 0)
    restored: PartitionProcessor = pickle.loads(pickle.dumps(p))
    restored.configure(FlowConfig())
    tail = batch(values[20:], first_offset=20)
    assert facts([p.process(tail, 0)]) == facts([restored.process(tail, 0)])


def test_an_idle_tick_flushes_open_windows_to_the_merger() -> None:
    p = PartitionProcessor(2, FlowConfig())
    p.process(batch([txn(1)]), 0)
    assert p.process(SourceBatch(2, [], 1, caught_up=True, idle=False), 0).merger is None
    news = p.process(SourceBatch(2, [], 1, caught_up=True, idle=True), 0).merger
    assert news is not None and news.idle and [d.count for d in news.deltas] == [1]


def test_the_sweep_forgets_the_resend_ids_of_cards_quiet_for_the_resend_ttl() -> None:
    config = FlowConfig()
    p = PartitionProcessor(2, config)
    p.process(batch([txn(1, card="quiet"), txn(2, card="busy")]), 0)
    ttl_s = config.resend_ttl_us // 1_000_000
    # Only the busy card is seen again, past the resend TTL and the sweep's interval.
    later = [txn(10 + i, card="busy", seconds=ttl_s + 60 + i) for i in range(3)]
    p.process(batch(later, first_offset=2, ts_ms=NOW_MS + (ttl_s + 120) * 1000), 0)
    assert p.cards["quiet"].ids == {}, "a card seen once keeps no id past the TTL"
    assert set(p.cards["busy"].ids) == {"tx-10", "tx-11", "tx-12"}
    # The card itself (its fraud history) stays until the card TTL.
    assert p.cards["quiet"].last_us < p.cards["busy"].last_us
