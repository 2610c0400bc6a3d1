"""How often a hold right after a publish gets the producer fenced, with and without
delivering the transaction's records before its abort.

    python -m bench.hold_race [--holds 24] [--busy 3]

``KafkaOutputs.hold()`` aborts a partition's open Kafka transaction when the lake
becomes unavailable (``flows/kit/lake_outage.py``). librdkafka 2.16 aborting while the
coordinator answers the transaction's AddPartitionsToTxn ignores that answer ("Ignoring
outdated AddPartitionsToTxn response in state BeginAbort") and sends no EndTxn ("No
partitions registered"): the transaction stays open at the coordinator, which aborts it
after ``transaction.timeout.ms`` and bumps the producer's epoch, and the producer's first
transaction after the outage is refused as fenced. The window is a few microseconds on
an idle machine, wider under load, so this is a race counted over many holds rather
than a test: each round publishes one dead letter and holds at once, for ``--holds``
partitions' outputs (a consumer group each), while ``--busy`` processes spin on the
CPUs; then waits past the transaction timeout and the broker's sweep for timed-out
transactions, releases, and commits. Both variants run in the same invocation, on the
same broker (``RIVERBED_KAFKA_BOOTSTRAP`` or the settings' local one).

The baseline ("abort at once") is the hold without the delivery: the outputs' producer
is wrapped so that its ``flush`` does nothing during the hold. Prints the fenced count
of each; nothing is written to ``bench/RESULTS.md`` (a count of a race, not a speed).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flows.kit.kafka_outputs import KafkaOutputs, ProducerFenced
from flows.kit.records import DlqRecord
from riverbed.kafka_admin import apply_topics
from riverbed.settings import Settings, load_settings
from riverbed.topics import PAYMENTS_ALERTS, PAYMENTS_DLQ, PAYMENTS_TRANSACTIONS

TRANSACTION_TIMEOUT_S = 2
# The broker's transaction.abort.timed.out.transaction.cleanup.interval.ms (Kafka's
# default; the tests' clusters sweep every second).
DEFAULT_SWEEP_S = 10


class _NoFlushWhileHolding:
    """A producer whose ``flush`` does nothing: the hold as it was before the delivery."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)

    def flush(self, *_args: object) -> int:
        return 0


def _spin() -> None:
    while True:
        pass


@contextmanager
def _busy(n: int) -> Iterator[None]:
    procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.join()


def _round(settings: Settings, holds: int, busy: int, flush_first: bool, wait_s: float) -> int:
    outputs = []
    for i in range(holds):
        group = f"bench.hold-race-{uuid.uuid4().hex[:8]}"
        per = load_settings(
            **{**settings.model_dump(exclude_none=True), "consumer_group": group},
        )
        outputs.append(
            KafkaOutputs(
                per,
                source_topic=PAYMENTS_TRANSACTIONS,
                partition=i % 6,
                dlq_topic=PAYMENTS_DLQ,
                alerts_topic=PAYMENTS_ALERTS,
            )
        )
    try:
        with _busy(busy):
            for i, out in enumerate(outputs):
                out.publish([DlqRecord(0, b"k", b"{", "value: bad")], [], through=1)
                time.sleep(0.003 * (i % 10))  # spread the holds over the answer's arrival
                if flush_first:
                    out.hold()
                else:
                    real = out._producer
                    out._producer = _NoFlushWhileHolding(real)
                    try:
                        out.hold()
                    finally:
                        out._producer = real
        time.sleep(wait_s)
        fenced = 0
        for out in outputs:
            out.release()
            try:
                out.commit(1)
            except ProducerFenced:
                fenced += 1
        return fenced
    finally:
        for out in outputs:
            out.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hold_race", description=__doc__)
    parser.add_argument("--holds", type=int, default=24, help="holds per variant")
    parser.add_argument("--busy", type=int, default=3, help="spinning processes meanwhile")
    parser.add_argument(
        "--sweep-s",
        type=float,
        default=DEFAULT_SWEEP_S,
        help="the broker's sweep for timed-out transactions, in seconds",
    )
    args = parser.parse_args(argv)
    settings = load_settings(flow_transaction_timeout_s=TRANSACTION_TIMEOUT_S)
    apply_topics(settings)
    wait_s = TRANSACTION_TIMEOUT_S + args.sweep_s + 1
    results = {}
    for name, flush_first in (("abort at once (baseline)", False), ("deliver, then abort", True)):
        results[name] = _round(settings, args.holds, args.busy, flush_first, wait_s)
    for name, fenced in results.items():
        print(f"{name:28} fenced {fenced} of {args.holds} holds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
