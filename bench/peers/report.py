"""The RESULTS.md section of a peer benchmark run: speed and correctness side by side."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.flow_bench import machine
from bench.peers.contenders import Outcome
from bench.peers.oracle import (
    OracleWindows,
    Semantics,
    WindowMatch,
    compare_windows,
    oracle_windows,
)
from bench.peers.venvs import PATHWAY, QUIX


@dataclass(frozen=True)
class Judged:
    """One contender run, judged against the oracle for its semantics."""

    outcome: Outcome
    events: int  # messages in the topic
    rows: str  # rows written, and how they differ from the valid first-seen events
    dead_letters: str  # invalid messages filed, against the invalid messages of the input
    windows: str  # equal / total against ``oracle``, or a dash
    oracle: OracleWindows | None
    late_share: float | None  # share of valid first-seen events it dropped as late
    equal_to: list[str]  # the oracles whose every window it wrote, and nothing else
    # Its oracle replayed in the order its windows saw the events, where Kafka shows it.
    in_arrival: OracleWindows | None = None

    @property
    def rate(self) -> float:
        return self.events / self.outcome.seconds


def judge(
    outcome: Outcome,
    events: int,
    expected_ids: list[str],
    invalid: int,
    oracles: dict[str, OracleWindows],
    name: str,
) -> Judged:
    """Rows against the valid first-seen transactions, dead letters against the invalid
    messages; windows against ``oracles[name]`` (and its replay in the contender's own
    arrival order), and which oracles it equals."""
    rows = f"{len(outcome.transaction_ids):,} {rows_verdict(outcome.transaction_ids, expected_ids)}"
    dead = outcome.dead_letters
    dead_letters = "—" if dead is None else f"{dead:,} " + ("✓" if dead == invalid else "✗")
    oracle = oracles.get(name)
    if outcome.windows is None or oracle is None:
        return Judged(outcome, events, rows, dead_letters, "—", None, None, [])
    match = compare_windows(oracle.windows, outcome.windows)
    valid = len(expected_ids)
    late = outcome.late_reported
    if late is None:  # every window it holds is written: what is in none was dropped
        late = valid - match.counted
    windows = _ratio(match)
    in_arrival = None
    if outcome.arrival is not None and oracle.semantics.lateness_ms is not None:
        in_arrival = oracle_windows(
            outcome.arrival, oracle.semantics, batches=outcome.arrival_batches
        )
        own = compare_windows(in_arrival.windows, outcome.windows)
        windows += f"; in its own arrival {_ratio(own)}"
    equal_to = [
        o.semantics.label
        for o in oracles.values()
        if compare_windows(o.windows, outcome.windows).all_equal
    ]
    if in_arrival is not None and compare_windows(in_arrival.windows, outcome.windows).all_equal:
        equal_to.append(f"{oracle.semantics.label}, in its own arrival")
    return Judged(
        outcome, events, rows, dead_letters, windows, oracle, late / valid, equal_to, in_arrival
    )


def _ratio(match: WindowMatch) -> str:
    return f"{match.equal:,} / {match.total:,}" + (" ✓" if match.all_equal else "")


def rows_verdict(written: list[str], expected: list[str]) -> str:
    """ "✓" when the rows are the valid first-seen transactions once each; else how not."""
    got, want = Counter(written), Counter(expected)
    if got == want:
        return "✓"
    missing = sum((want - got).values())
    extra = sum((got - want).values())
    return f"({missing:,} missing, {extra:,} extra or repeated)"


def section(
    judged: list[Judged], rounds: list[list[Judged]], *, events: int, valid: int, invalid: int,
    span_min: float, semantics: list[Semantics], command: str,
) -> str:  # fmt: skip
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = []
    for j in judged:
        oracle = j.oracle.semantics.label if j.oracle else "—"
        equal_to = ", ".join(j.equal_to) or ("none" if j.oracle else "—")
        late = "—" if j.late_share is None else f"{j.late_share:.2%}"
        expected = "" if j.oracle is None else f" ({j.oracle.late / j.oracle.events:.2%}"
        if j.in_arrival is not None:
            expected += f"; in its own arrival {j.in_arrival.late / j.in_arrival.events:.2%}"
        expected += ")" if expected else ""
        lines.append(
            f"| {j.outcome.name} | {j.outcome.seconds:.1f} | {j.rate:,.0f} | {j.rows} | "
            f"{j.dead_letters} | "
            f"{j.windows} ({oracle}) | {equal_to} | {late}{expected} |"
        )
    legend = "; ".join(f"**{o.label}**: {o.means}" for o in semantics)
    every = "; ".join(
        f"{name}: " + ", ".join(f"{r.rate:,.0f} ({_round_note(r)})" for r in runs)
        for name, runs in _by_name(rounds).items()
    )
    return f"""
## Peers: the payments job in Riverbed, Quix Streams and Pathway ({when})

- machine: {machine()}
- input: {events:,} generated transactions (`bench.flow_bench`'s preload, seed 7) in a fresh
  6-partition topic, {span_min:.0f} minutes of event time: {valid:,} valid first-seen, {invalid:,}
  invalid, the rest resends
- the job, in each: validate against the transaction contract (invalid: DLQ or dropped),
  drop resends, write the valid rows (Parquet; Pathway: JSON lines), 1-minute tumbling
  windows per merchant in event time with 30 s allowed lateness (count, sum of amount)
- timed from launch until all is written: the bare consumer, Riverbed and Quix until their
  committed offsets reach the end of the topic (Riverbed: its Delta commits' offsets, then
  until `merchant_minute` holds all its on-time rows; Quix: its group's offsets on the
  source and on its repartition topic); Pathway keeps no Kafka offsets, so until its output
  files stop growing (the last growth, once none grew for 10 s with all the valid rows
  written, or for 120 s)
- peers in venvs of their own: quixstreams {QUIX.version} (exactly-once, `LocalFileSink`
  Parquet, `.final()` windows), pathway {PATHWAY.version} (`common_behavior(cutoff=30 s)`,
  and without a cutoff: every event, windows rewritten as revision rows); best of
  {len(next(iter(_by_name(rounds).values())))} round(s), order rotating
- rows: against the valid first-seen transactions (the generator's labels); dead letters:
  the DLQ's committed records (Pathway: its `dlq.jsonl`) against the invalid messages
  (the bare consumer files none: it drops what msgspec cannot decode); windows:
  equal / total (a window on either side only is unequal) against an oracle computed
  from the input in plain Python under the contender's lateness semantics; dropped as
  late: share of valid first-seen events in no window (oracle's share in brackets). "In
  its own arrival": the oracle replayed in the order the contender's windows read the
  events, which the order of a backlog's fetches decides: Quix's repartition topic, read
  back; Pathway's minibatches, from the `time` of its output rows

| contender | seconds | events/s | rows ({valid:,} expected) | dead letters ({invalid:,}) \
| windows equal / total (oracle) | equal to every window of | dropped as late |
|---|---:|---:|---:|---:|---:|---|---:|
{chr(10).join(lines)}

Oracles: {legend}.

Every round, events/s (windows equal / total; notes): {every}.

Reproduce: `{command}`
"""


def _round_note(judged: Judged) -> str:
    notes = [x for x in (judged.windows, judged.outcome.note) if x and x != "—"]
    return "; ".join(notes) or "no windows"


def _by_name(rounds: list[list[Judged]]) -> dict[str, list[Judged]]:
    out: dict[str, list[Judged]] = {}
    for runs in rounds:
        for j in runs:
            out.setdefault(j.outcome.name, []).append(j)
    return out


def best(rounds: list[list[Judged]]) -> list[Judged]:
    """Each contender's fastest run, in the order of the first round."""
    return [max(runs, key=lambda j: j.rate) for runs in _by_name(rounds).values()]
