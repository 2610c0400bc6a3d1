"""The correctness oracle: what each contender should have written, from the input alone.

Pure Python over the preloaded input (:class:`InputEvent`: the valid, first-seen
transactions in produce order, each with the Kafka partition and offset it landed on),
never through the code under test. The frameworks differ in *which* events they call
late, so the windows are computed once per lateness semantics (:class:`Semantics`):

- scope: whose newest event time an event is judged against: its Kafka partition's
  (Riverbed's per-partition watermark), its window key's (Quix Streams closes windows
  per message key, after the repartition by merchant), or the whole stream's (Pathway).
- rule: Riverbed calls an event late when it is older than that newest event time minus
  the allowed lateness (``EVENT``); Quix and Pathway when its *window* ended at least the
  lateness before that newest time (``WINDOW``), whatever the event's own time.

Events are replayed in produce order. For the partition scope that is exactly the
order each partition holds them in, so the oracle is exact. For the merchant and global
scopes a contender sees the partitions interleaved as its consumer fetched them, which
no one can know in advance: produce order is the ideal interleaving (the event-time
order of a live stream), and a contender reading a backlog in another one is expected
to differ; the benchmark reports by how much.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

WINDOW_MS = 60_000
LATENESS_MS = 30_000

WindowKey = tuple[str, int]  # (merchant_id, window start in ms since the epoch)
Aggregate = tuple[int, int]  # (transaction count, sum of amounts in cents)


@dataclass(frozen=True, slots=True)
class InputEvent:
    """A valid, first-seen transaction of the input, as the oracle needs it."""

    partition: int
    offset: int
    transaction_id: str
    merchant_id: str
    event_ms: int
    cents: int


class Scope(StrEnum):
    PARTITION = "partition"
    MERCHANT = "merchant"
    GLOBAL = "global"


class Rule(StrEnum):
    EVENT = "event"  # late: event time < newest - lateness
    WINDOW = "window"  # late: window end + lateness <= newest


@dataclass(frozen=True)
class Semantics:
    """One contender's idea of lateness, and whether it writes windows still open at the
    end of the input (Quix's ``.final()`` writes only closed ones)."""

    label: str  # a short name for tables
    means: str  # the rule in words, for the legend
    lateness_ms: int | None  # None: nothing is late
    scope: Scope = Scope.GLOBAL
    rule: Rule = Rule.EVENT
    closed_only: bool = False


@dataclass(frozen=True)
class OracleWindows:
    semantics: Semantics
    windows: dict[WindowKey, Aggregate]
    late: int  # events late under the semantics (in no window)
    events: int  # valid first-seen events replayed


def _scope_key(event: InputEvent, scope: Scope) -> object:
    if scope is Scope.PARTITION:
        return event.partition
    if scope is Scope.MERCHANT:
        return event.merchant_id
    return None


def oracle_windows(
    events: Iterable[InputEvent],
    semantics: Semantics,
    window_ms: int = WINDOW_MS,
    batches: Iterable[int] | None = None,
) -> OracleWindows:
    """Tumbling windows per merchant of the on-time ``events`` (in produce order).

    With ``batches`` (one number per event, never decreasing), the newest event times
    move only between batches: every event of a batch is judged against the time before
    it, as Pathway judges the rows of one minibatch."""
    newest: dict[object, int] = {}
    pending: dict[object, int] = {}  # newest times of the current batch
    batch_of = iter(batches) if batches is not None else None
    batch: int | None = None
    sums: dict[WindowKey, list[int]] = {}
    late = total = 0
    lateness = semantics.lateness_ms
    for event in events:
        total += 1
        if batch_of is not None:
            this_batch = next(batch_of)
            if this_batch != batch:
                batch = this_batch
                _advance(newest, pending)
        scope = _scope_key(event, semantics.scope)
        start = event.event_ms - event.event_ms % window_ms
        seen = newest.get(scope)
        if lateness is not None and seen is not None:
            if semantics.rule is Rule.EVENT:
                is_late = event.event_ms < seen - lateness
            else:
                is_late = start + window_ms + lateness <= seen
            if is_late:
                late += 1
                continue
        moved = pending if batch_of is not None else newest
        if event.event_ms > moved.get(scope, -(1 << 62)):
            moved[scope] = event.event_ms
        agg = sums.setdefault((event.merchant_id, start), [0, 0])
        agg[0] += 1
        agg[1] += event.cents
    _advance(newest, pending)
    windows = {key: (agg[0], agg[1]) for key, agg in sums.items()}
    if semantics.closed_only and lateness is not None:
        # A window closes once its scope's newest event time reaches its end + lateness.
        windows = {
            key: agg
            for key, agg in windows.items()
            if key[1] + window_ms + lateness <= newest[_merchant_scope(key, semantics.scope)]
        }
    return OracleWindows(semantics, windows, late, total)


def _advance(newest: dict[object, int], pending: dict[object, int]) -> None:
    for scope, ms in pending.items():
        if ms > newest.get(scope, -(1 << 62)):
            newest[scope] = ms
    pending.clear()


def _merchant_scope(key: WindowKey, scope: Scope) -> object:
    if scope is Scope.MERCHANT:
        return key[0]
    if scope is Scope.GLOBAL:
        return None
    raise ValueError("closed_only needs a merchant or global scope: a window spans partitions")


@dataclass(frozen=True)
class WindowMatch:
    """How a contender's windows compare with the oracle's."""

    equal: int  # windows present on both sides with the same count and sum
    total: int  # windows on either side
    counted: int  # events in the contender's windows

    @property
    def all_equal(self) -> bool:
        return self.equal == self.total


def compare_windows(
    expected: dict[WindowKey, Aggregate], got: dict[WindowKey, Aggregate]
) -> WindowMatch:
    keys = expected.keys() | got.keys()
    equal = sum(1 for key in keys if expected.get(key) == got.get(key))
    return WindowMatch(equal, len(keys), sum(count for count, _ in got.values()))


def first_seen(events: Iterable[InputEvent]) -> list[InputEvent]:
    """The first event of each transaction id, in the given order (resends dropped)."""
    seen: set[str] = set()
    out = []
    for event in events:
        if event.transaction_id not in seen:
            seen.add(event.transaction_id)
            out.append(event)
    return out
