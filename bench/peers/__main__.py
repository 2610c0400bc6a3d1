"""Peer benchmark: the payments job in Riverbed, Quix Streams and Pathway, side by side.

    python -m bench.peers [--events 1000000] [--rounds 1] [--only NAME ...] [--no-results] [--keep]

Pre-loads ``--events`` generated transactions once (as ``bench.flow_bench`` does), reads
them back and computes the oracle (:mod:`bench.peers.oracle`), then runs each contender
over the same topic, ``--rounds`` times with the order rotating: the bare
confluent-kafka consumer (``bench.flow_bench``'s baseline), the Riverbed payments flow,
Quix Streams and Pathway (cutoff 30 s, and none), each peer in a venv of its own made on
first use under ``/tmp/rb-bench/peers/venvs`` (``--venvs``). Appends a section with
events/s and the correctness columns to ``bench/RESULTS.md`` (not with ``--no-results``).

Runs against ``RIVERBED_KAFKA_BOOTSTRAP`` or the settings' local broker, which must be
running (``riverbed kafka start``).
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import confluent_kafka

from bench.flow_bench import (
    ALERTS,
    DLQ,
    PROFILES,
    SOURCE,
    append_results,
    delete_topics,
    end_offsets,
    preload,
    recreate_topics,
)
from bench.peers import contenders
from bench.peers.contenders import Outcome
from bench.peers.input import labelled_input, read_back
from bench.peers.oracle import LATENESS_MS, Rule, Scope, Semantics, oracle_windows
from bench.peers.report import Judged, best, judge, section
from bench.peers.venvs import PATHWAY, QUIX, ensure_venv
from riverbed.kafka_admin import admin_client, cluster_metadata
from riverbed.settings import Settings, load_settings

CONTENDERS = ("bare", "riverbed", "quix", "pathway-cutoff", "pathway-all")

SEMANTICS = {
    "riverbed": Semantics(
        "per-partition",
        "late if older than the newest event of its Kafka partition - 30 s (Riverbed's "
        "per-partition watermark; exact: a partition's order is the input's)",
        LATENESS_MS, Scope.PARTITION, Rule.EVENT,
    ),
    "quix": Semantics(
        "per-merchant, closed",
        "late if its window ended 30 s or more before the newest event of its merchant (the "
        "window key), replayed in produce order; only the windows that closed so (Quix's "
        "`.final()` with its default per-key closing)",
        LATENESS_MS, Scope.MERCHANT, Rule.WINDOW, closed_only=True,
    ),
    "pathway-cutoff": Semantics(
        "global",
        "late if its window ended 30 s or more before the newest event of the whole stream, "
        "replayed in produce order, event by event (Pathway's cutoff, whose time advances "
        "once per minibatch)",
        LATENESS_MS, Scope.GLOBAL, Rule.WINDOW,
    ),
    "pathway-all": Semantics("every event", "nothing is late", None),
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/rb-bench/peers"))
    parser.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the outputs and logs")
    args = parser.parse_args(argv)
    settings = load_settings()
    venvs = args.work / "venvs"
    venvs.mkdir(parents=True, exist_ok=True)
    pythons = {}
    if "quix" in args.only:
        pythons["quix"] = ensure_venv(QUIX, venvs)
    if {"pathway-cutoff", "pathway-all"} & set(args.only):
        pythons["pathway"] = ensure_venv(PATHWAY, venvs)
    run_id = time.strftime("%Y%m%d-%H%M%S")
    work = args.work / "runs" / run_id
    work.mkdir(parents=True)

    recreate_topics(settings, [SOURCE, ALERTS, DLQ, PROFILES])
    try:
        print(f"pre-loading {args.events:,} events ...", flush=True)
        print(f"  done in {preload(settings, args.events):.1f}s", flush=True)
        ends = end_offsets(settings, SOURCE)
        total = sum(ends.values())
        valid, invalid = labelled_input(settings, args.events, read_back(settings, SOURCE, ends))
        expected_ids = [e.transaction_id for e in valid]
        oracles = {name: oracle_windows(valid, s) for name, s in SEMANTICS.items()}
        span = (max(e.event_ms for e in valid) - min(e.event_ms for e in valid)) / 60_000
        print(f"  oracle: {len(valid):,} valid first-seen, {invalid:,} invalid", flush=True)

        runners = _runners(settings, pythons, ends, len(valid))
        rounds: list[list[Judged]] = []
        for round_ in range(args.rounds):
            order = args.only[round_ % len(args.only) :] + args.only[: round_ % len(args.only)]
            runs = []
            for name in order:
                home = work / f"{name}-{round_}"
                home.mkdir()
                outcome = runners[name](home, f"bench.peers.{run_id}.{name}.{round_}")
                judged = judge(outcome, total, expected_ids, invalid, oracles, name)
                print(
                    f"  {outcome.name}: {judged.rate:,.0f} events/s ({outcome.seconds:.1f}s), "
                    f"rows {judged.rows}, windows {judged.windows} {outcome.note}",
                    flush=True,
                )
                runs.append((args.only.index(name), judged))
            rounds.append([judged for _, judged in sorted(runs, key=lambda run: run[0])])
    finally:
        delete_topics(settings, [SOURCE, ALERTS, DLQ, PROFILES, *_peer_topics(settings)])
    only = [] if args.only == list(CONTENDERS) else ["--only", *args.only]
    command = "python -m bench.peers " + shlex.join(
        ["--events", str(args.events), "--rounds", str(args.rounds), *only]
    )
    text = section(
        best(rounds), rounds, events=total, valid=len(valid), invalid=invalid,
        span_min=span, semantics=list(SEMANTICS.values()), command=command,
    )  # fmt: skip
    print(text)
    if not args.no_results:
        append_results(text)
    if args.keep:
        print(f"outputs and logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _runners(
    settings: Settings, pythons: dict[str, Path], ends: dict[int, int], valid: int
) -> dict[str, Callable[[Path, str], Outcome]]:
    return {
        "bare": lambda home, group: contenders.run_bare(settings, ends, home, group),
        "riverbed": lambda home, group: contenders.run_riverbed(settings, ends, home, group),
        "quix": lambda home, group: contenders.run_quix(
            settings, pythons["quix"], ends, home, group
        ),
        "pathway-cutoff": lambda home, group: contenders.run_pathway(
            settings, pythons["pathway"], home, group, LATENESS_MS, valid
        ),
        "pathway-all": lambda home, group: contenders.run_pathway(
            settings, pythons["pathway"], home, group, None, valid
        ),
    }


def _peer_topics(settings: Settings) -> list[str]:
    """The topics the peers made for themselves (Quix's DLQ, repartition, changelogs)."""
    with contextlib.suppress(confluent_kafka.KafkaException):
        metadata = cluster_metadata(admin_client(settings))
        return [n for n in metadata.topics if "bench.peers." in n]
    return []


if __name__ == "__main__":
    sys.exit(main())
