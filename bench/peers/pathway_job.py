"""The payments job in Pathway, as its documentation would have one write it.

Run by the peer benchmark with the Pathway venv's python (never the project's), the
repository root on PYTHONPATH for the transaction contract only
(``riverbed.contracts.payments``, msgspec and nothing else), so every contender
validates with the same rules.

The job: read ``--topic`` in streaming mode from the beginning (Pathway commits no
offsets to Kafka: its progress lives in its own persistence, not configured here);
check each message against the contract, "now" being the message's Kafka timestamp;
invalid ones to ``dlq.jsonl`` with the reason, partition and offset; resends dropped (a
group by transaction id); valid first-seen transactions to ``transactions.jsonl``; 1-minute
tumbling windows per merchant in event time, count and sum of cents, to
``windows.jsonl``. With ``--cutoff-ms`` a window stops taking events once Pathway's time
(the newest event time it has seen, across the whole stream, advanced once per
minibatch) passes its end plus the cutoff; without, windows take every event and are
rewritten as they change. Pathway's JSON-lines output is its stream of changes: each row
carries ``diff`` (+1 insert, -1 retraction), so a window's final value is what remains
after the retractions. (Pathway's Delta Lake output needs a licence key; JSON lines do not.)
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pathway as pw

from riverbed.contracts.payments import InvalidEvent, decode_transaction

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pw.udf(deterministic=True)
def check(data: bytes | None, metadata: pw.Json) -> pw.Json:
    """The transaction's columns, or the contract's reason for rejecting it."""
    stamp = metadata.value.get("timestamp_millis")  # type: ignore[union-attr]
    now = EPOCH + timedelta(milliseconds=stamp) if stamp is not None else datetime.now(UTC)
    try:
        txn, event_time = decode_transaction(data, now)
    except InvalidEvent as exc:
        return pw.Json({"ok": False, "error": str(exc)})
    return pw.Json(
        {
            "ok": True,
            "transaction_id": txn.transaction_id,
            "card_id": txn.card_id,
            "merchant_id": txn.merchant_id,
            "amount_cents": round(txn.amount * 100),
            "event_ms": (event_time - EPOCH) // timedelta(milliseconds=1),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--window-ms", type=int, default=60_000)
    parser.add_argument("--cutoff-ms", type=int, default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    raw = pw.io.kafka.read(
        {
            "bootstrap.servers": args.brokers,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        },
        topic=args.topic,
        format="raw",
        with_metadata=True,
        name="payments",
    )
    checked = raw.select(row=check(pw.this.data, pw.this._metadata), meta=pw.this._metadata)
    invalid = checked.filter(pw.this.row["ok"].as_bool() == False)  # noqa: E712 - a column
    dead_letters = invalid.select(
        error=pw.this.row["error"].as_str(),
        partition=pw.this.meta["partition"].as_int(),
        offset=pw.this.meta["offset"].as_int(),
    )
    pw.io.jsonlines.write(dead_letters, args.out / "dlq.jsonl")
    valid = checked.filter(pw.this.row["ok"].as_bool() == True).select(  # noqa: E712
        transaction_id=pw.unwrap(pw.this.row["transaction_id"].as_str()),
        card_id=pw.unwrap(pw.this.row["card_id"].as_str()),
        merchant_id=pw.unwrap(pw.this.row["merchant_id"].as_str()),
        amount_cents=pw.unwrap(pw.this.row["amount_cents"].as_int()),
        event_ms=pw.unwrap(pw.this.row["event_ms"].as_int()),
    )
    # Resends carry identical values: any of a transaction id's rows is its first.
    txns = valid.groupby(pw.this.transaction_id).reduce(
        pw.this.transaction_id,
        card_id=pw.reducers.any(pw.this.card_id),
        merchant_id=pw.reducers.any(pw.this.merchant_id),
        amount_cents=pw.reducers.any(pw.this.amount_cents),
        event_ms=pw.reducers.any(pw.this.event_ms),
    )
    pw.io.jsonlines.write(txns, args.out / "transactions.jsonl")
    timed = txns.with_columns(event_time=pw.this.event_ms.dt.utc_from_timestamp(unit="ms"))
    behavior = (
        pw.temporal.common_behavior(cutoff=timedelta(milliseconds=args.cutoff_ms))
        if args.cutoff_ms is not None
        else None
    )
    windows = timed.windowby(
        pw.this.event_time,
        window=pw.temporal.tumbling(duration=timedelta(milliseconds=args.window_ms)),
        instance=pw.this.merchant_id,
        behavior=behavior,
    ).reduce(
        merchant_id=pw.this._pw_instance,
        window_start=pw.this._pw_window_start,
        count=pw.reducers.count(),
        amount_cents=pw.reducers.sum(pw.this.amount_cents),
    )
    pw.io.jsonlines.write(windows, args.out / "windows.jsonl")
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)


if __name__ == "__main__":
    main()
