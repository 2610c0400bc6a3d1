"""The payments job in Quix Streams, as its documentation would have one write it.

Run by the peer benchmark with the Quix venv's python (never the project's), the
repository root on PYTHONPATH for the transaction contract only
(``riverbed.contracts.payments``, which needs msgspec and nothing else): every
contender validates with the same rules, so the benchmark compares the frameworks, not
validators.

The job: read ``--topic`` from the start with exactly-once processing; invalid messages
to ``--dlq`` (original bytes, in the same Kafka transaction); resends dropped (state per
card, the topic's key); valid first-seen transactions to Parquet files (Quix's
``LocalFileSink``, flushed at each checkpoint before the offsets commit); event time set
from ``event_time``; regrouped by merchant (a repartition topic) into 1-minute tumbling
windows with a 30 s grace, count and sum of cents, written when they close
(``.final()``, Quix's default per-key closing) to JSON-lines files. Events Quix drops
as late are counted by ``on_late`` and written to ``stats.json`` when the job stops.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from quixstreams import Application
from quixstreams.dataframe.windows import Count, Sum
from quixstreams.sinks.community.file.local import LocalFileSink

from riverbed.contracts.payments import InvalidEvent, decode_transaction

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def check(value: bytes | None, key: Any, timestamp: int, headers: Any) -> dict[str, Any]:
    """The transaction's columns, or its reason and bytes when the contract rejects it.
    "Now" for the future check is the message's Kafka timestamp, as in Riverbed."""
    try:
        txn, event_time = decode_transaction(value, EPOCH + timedelta(milliseconds=timestamp))
    except InvalidEvent as exc:
        return {"error": str(exc), "raw": value or b""}
    return {
        "transaction_id": txn.transaction_id,
        "card_id": txn.card_id,
        "merchant_id": txn.merchant_id,
        "mcc": txn.mcc,
        "amount_cents": round(txn.amount * 100),
        "currency": txn.currency,
        "country": txn.country,
        "lat": txn.lat,
        "lon": txn.lon,
        "channel": txn.channel,
        "event_ms": (event_time - EPOCH) // timedelta(milliseconds=1),
    }


def first_seen(value: dict[str, Any], state: Any) -> bool:
    """Keep a transaction id's first message; the state is per card (the message key)."""
    tid = value["transaction_id"]
    if state.get(tid):
        return False
    state.set(tid, 1)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--dlq", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--window-ms", type=int, default=60_000)
    parser.add_argument("--lateness-ms", type=int, default=30_000)
    args = parser.parse_args()
    # LocalFileSink accepts only [a-zA-Z0-9 ._/] in its directory: work relative to --out.
    args.out.mkdir(parents=True, exist_ok=True)
    os.chdir(args.out)
    late = {"events": 0}

    def on_late(*_args: Any, **_kwargs: Any) -> bool:
        late["events"] += 1
        return False  # counted here; no log line per event

    app = Application(
        broker_address=args.brokers,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        state_dir="state",
        loglevel="INFO",
    )
    source = app.topic(args.topic, key_deserializer="bytes", value_deserializer="bytes")
    dlq = app.topic(args.dlq, key_serializer="bytes", value_serializer="bytes")

    checked = app.dataframe(source).apply(check, metadata=True)
    checked.filter(lambda v: "error" in v).apply(lambda v: v["raw"]).to_topic(dlq)
    valid = checked.filter(lambda v: "error" not in v).filter(first_seen, stateful=True)
    valid = valid.set_timestamp(lambda value, key, timestamp, headers: value["event_ms"])
    valid.sink(LocalFileSink(directory="transactions", format="parquet"))
    windows = (
        valid.group_by("merchant_id")
        .tumbling_window(duration_ms=args.window_ms, grace_ms=args.lateness_ms, on_late=on_late)
        .agg(count=Count(), amount_cents=Sum("amount_cents"))
        .final()
    )
    # The window's value lacks its key (the merchant), and the file sink writes the key
    # badly for str keys: put it in the value.
    windows = windows.apply(lambda v, key, ts, headers: {**v, "merchant_id": key}, metadata=True)
    windows.sink(LocalFileSink(directory="windows", format="json"))
    try:
        app.run()
    finally:
        Path("stats.json").write_text(json.dumps({"late": late["events"]}))


if __name__ == "__main__":
    main()
