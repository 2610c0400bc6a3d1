"""What ``riverbed replay`` runs: options in, progress on stderr, the summary on stdout.

Exit status: 0 when every message was delivered (rows in the dead-letter topic
included), 1 when some were not, 2 when the options do not fit the file or the domain
(nothing is sent then).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from producers.replay.domains import ReplayError
from producers.replay.run import ReplayOptions, replay
from riverbed.settings import Settings


def options_from(args: argparse.Namespace) -> ReplayOptions:
    return ReplayOptions(
        domain=args.domain,
        path=Path(args.file),
        time_column=args.time_column,
        maps=tuple(args.map or ()),
        sets=tuple(args.set or ()),
        id_column=args.id_column,
        speed=None if args.as_fast_as_possible else args.speed,
        keep_time=args.keep_time,
        time_zone=args.time_zone,
    )


def run_replay(settings: Settings, args: argparse.Namespace) -> int:
    def to_stderr(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        summary = replay(settings, options_from(args), progress=to_stderr)
    except ReplayError as exc:
        print(f"riverbed replay: {exc}", file=sys.stderr)
        return 2
    for line in summary.lines():
        print(line)
    return 0 if summary.ok and summary.stopped_by != "refused" else 1
