"""The ``riverbed`` command: run each part of the platform on its own.

    riverbed kafka start|stop|status|restart [--brokers N] [--secure] [--rolling]
    riverbed topics apply|describe
    riverbed produce payments [--rate N] [--count N | --duration S] [--seed S]
    riverbed produce iot [--rate N] [--count N | --duration S] [--seed S] [--rooms N]
    riverbed flow run payments|iot [--processes N] [--no-recovery]
    riverbed replay <domain> FILE.csv --time-column C [--map column=field ...]
                    [--set field=value ...] [--speed X | --as-fast-as-possible]
                    [--keep-time] [--id-column C] [--time-zone Z]
    riverbed metrics [--port N]

Settings come from ``RIVERBED_*`` environment variables (see README).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

# Only the standard library at import time: the rest (pydantic, Kafka) is imported by
# main(), where a Ctrl-C during those ~0.2 s ends the command quietly (exit 130) instead
# of printing Python's KeyboardInterrupt traceback from the middle of an import.
if TYPE_CHECKING:
    from riverbed.settings import Settings

# Domains a producer or flow exists for; the modules are imported on demand
# because riverbed/ must not depend on producers/ or flows/ at import time.
PRODUCERS = {
    "payments": "producers.payments:produce_payments",
    "iot": "producers.iot:produce_iot",
}
FLOWS = {"payments": "flows.payments:run_flow", "iot": "flows.iot:run_flow"}


def _at_least_one(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def _load(target: str) -> Callable[..., object]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def cmd_kafka(settings: Settings, args: argparse.Namespace) -> int:
    from riverbed.broker import BrokerError, LocalCluster
    from riverbed.kafka_health import cluster_health
    from riverbed.kafka_jars import KafkaJarsError

    logging.getLogger("riverbed.broker").setLevel(logging.INFO)
    overrides: dict[str, object] = {}
    if args.brokers is not None:
        overrides["kafka_brokers"] = args.brokers
    if args.secure:
        overrides["kafka_secure"] = True
    if overrides:
        from riverbed.settings import load_settings

        settings = load_settings(**overrides)
    cluster = LocalCluster(settings)
    try:
        if args.action == "start":
            status = cluster.start()
        elif args.action == "stop":
            status = cluster.stop()
        elif args.action == "restart":
            status = cluster.restart(rolling=args.rolling, progress=print)
        else:
            status = cluster.status()
    except (BrokerError, KafkaJarsError, TimeoutError) as exc:
        print(f"riverbed kafka {args.action}: {exc}", file=sys.stderr)
        return 1
    print(status.message)
    if args.action == "stop":
        return 0
    if args.action == "status" and not any(s.running for s in status.nodes) and status.nodes:
        return 1  # nothing to ask
    health = cluster_health(settings, expected=cluster.nodes)
    if args.action == "status" or not health.healthy:
        print(health.report())
    if args.action == "status":
        return 0 if status.running and health.healthy else 1
    # A node just started is registered but still catching up: that is not a failure.
    return 0 if status.running else 1


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from riverbed import kafka_admin
    from riverbed.topics import CATALOG

    if args.action == "describe":
        admin = kafka_admin.admin_client(settings)
        states = kafka_admin.describe_topics(admin, [s.name for s in CATALOG])
        brokers = kafka_admin.cluster_size(settings, admin)
        for spec in CATALOG:
            drift = kafka_admin.topic_drift(settings, spec, states.get(spec.name), brokers)
            state = states.get(spec.name)
            shape = (
                f"{state.partitions} partitions, rf {state.replication_factor}" if state else "-"
            )
            print(f"{spec.name}: {shape}" + (f"; DRIFT: {'; '.join(drift)}" if drift else ""))
        return 0
    results = kafka_admin.apply_topics(settings)
    for result in results:
        print(result.summary())
    failed = [r for r in results if r.error]
    drifted = [r for r in results if r.drift]
    if drifted:
        print(
            f"{len(drifted)} topic(s) drift from their declaration in riverbed/topics.py; "
            "fix them on the cluster or change the declaration.",
            file=sys.stderr,
        )
    return 1 if failed or drifted else 0


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    produce = _load(PRODUCERS[args.domain])
    logging.getLogger("riverbed.producer").setLevel(logging.INFO)
    if args.rooms is not None and args.domain != "iot":
        print(f"riverbed produce {args.domain}: --rooms is for iot", file=sys.stderr)
        return 2
    rooms = {} if args.rooms is None else {"rooms": args.rooms}
    summary = produce(
        settings,
        rate=args.rate,
        count=args.count,
        duration=args.duration,
        seed=args.seed,
        serve_metrics=True,
        **rooms,
    )
    print(summary.line())  # type: ignore[attr-defined]
    return 0 if summary.ok else 1  # type: ignore[attr-defined]


def cmd_flow(settings: Settings, args: argparse.Namespace) -> int:
    run_flow = _load(FLOWS[args.domain])
    result = run_flow(settings, processes=args.processes, recovery=not args.no_recovery)
    return int(result or 0)


def cmd_metrics(settings: Settings, args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from riverbed.prometheus import serving
    from riverbed.state_metrics import StateCollector

    # Blocked in every thread (the server's included, started below), then waited for:
    # Ctrl-C and SIGTERM end the block, which removes this target from Prometheus.
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    registry = CollectorRegistry()
    registry.register(StateCollector(settings).start())
    with serving(settings, "riverbed", "state", registry, port=args.port) as port:
        print(f"serving the lake's, warehouse's and lag metrics on http://127.0.0.1:{port}/metrics")
        sys.stdout.flush()
        signal.sigwait(stop)
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    run_replay = _load("producers.replay.cli:run_replay")
    result = run_replay(settings, args)
    return int(result or 0)  # type: ignore[call-overload]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="riverbed", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = sub.add_parser("kafka", help="the local Kafka cluster, and any cluster's health")
    kafka.add_argument("action", choices=["start", "stop", "restart", "status"])
    kafka.add_argument(
        "--brokers", type=int, help="nodes of the local cluster (RIVERBED_KAFKA_BROKERS)"
    )
    kafka.add_argument(
        "--secure",
        action="store_true",
        help="SASL/SCRAM over TLS with a user and ACLs per role (RIVERBED_KAFKA_SECURE; "
        "export that for the other commands)",
    )
    kafka.add_argument(
        "--rolling",
        action="store_true",
        help="restart: one node at a time, each once every partition is in sync again",
    )
    kafka.set_defaults(func=cmd_kafka)

    topics = sub.add_parser("topics", help="reconcile the cluster with riverbed/topics.py")
    topics.add_argument("action", choices=["apply", "describe"])
    topics.set_defaults(func=cmd_topics)

    produce = sub.add_parser("produce", help="publish generated events")
    produce.add_argument("domain", choices=sorted(PRODUCERS))
    produce.add_argument("--rate", type=float, help="events per second (0: as fast as possible)")
    stop = produce.add_mutually_exclusive_group()
    stop.add_argument("--count", type=int, help="stop after this many events")
    stop.add_argument("--duration", type=float, help="stop after this many seconds")
    produce.add_argument("--seed", type=int, help="same seed, same events")
    produce.add_argument(
        "--rooms", type=int, help="iot: rooms of the simulated building, 3 devices each (8)"
    )
    produce.set_defaults(func=cmd_produce)

    flow = sub.add_parser("flow", help="run a Bytewax dataflow")
    flow_sub = flow.add_subparsers(dest="flow_action", required=True)
    run = flow_sub.add_parser("run", help="run a flow in the foreground")
    run.add_argument("domain", choices=sorted(FLOWS))
    run.add_argument(
        "--processes",
        type=_at_least_one,
        default=1,
        help="flow processes, at most the topic's partitions (default 1)",
    )
    run.add_argument("--no-recovery", action="store_true", help="no recovery store")
    run.set_defaults(func=cmd_flow)

    metrics = sub.add_parser(
        "metrics", help="serve the lake's, the warehouse's and the lag's state to Prometheus"
    )
    metrics.add_argument("--port", type=int, default=0, help="default: any free port")
    metrics.set_defaults(func=cmd_metrics)

    replay = sub.add_parser(
        "replay",
        help="publish a recorded CSV to a domain's topic, on the recording's own schedule",
        description="Publish a recorded CSV to the domain's topic (iot: iot.readings; "
        "payments: payments.transactions) in the order and spacing of its timestamps. Rows "
        "that do not fit the contract go to the domain's dead-letter topic; see "
        "docs/replay.md.",
    )
    replay.add_argument("domain", help="iot or payments")
    replay.add_argument("file", metavar="FILE.csv", help="a CSV file with a header row")
    replay.add_argument(
        "--time-column",
        required=True,
        metavar="C",
        help="the column of recorded times (ISO 8601, or epoch seconds)",
    )
    replay.add_argument(
        "--map",
        action="append",
        metavar="column=field",
        help="fill a contract field from a column (repeatable); a column named like a "
        "field fills it without one",
    )
    replay.add_argument(
        "--set",
        action="append",
        metavar="field=value",
        help="fill a field the recording lacks, the same on every row (repeatable)",
    )
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="X",
        help="real time times X (default 1; 60: a recorded minute a second)",
    )
    pace.add_argument("--as-fast-as-possible", action="store_true", help="no pacing")
    replay.add_argument(
        "--keep-time",
        action="store_true",
        help="event times as recorded (default: shifted so the first row is now)",
    )
    replay.add_argument(
        "--id-column",
        metavar="C",
        help="the column of event ids (default: derived from the file and row number)",
    )
    replay.add_argument(
        "--time-zone",
        default="UTC",
        metavar="Z",
        help="the zone of recorded times without an offset (default UTC; e.g. Europe/Brussels)",
    )
    replay.set_defaults(func=cmd_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        from riverbed.logs import command_settings

        try:
            settings = command_settings()
        except SystemExit as exc:
            return int(exc.code or 0)
        return int(args.func(settings, args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
