"""The stream-table join: card profiles from payments.card_profiles, in force from their
Kafka timestamp on, and the profile_amount rule that uses them."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime

from flows.kit.records import RawRecord, SourceBatch
from flows.payments.config import FlowConfig
from flows.payments.fraud import PROFILE_AMOUNT
from flows.payments.processor import PartitionProcessor
from riverbed.contracts.payments import CardProfile, encode
from tests.support.transactions import VALID_TRANSACTION

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def txn(i: int, card: str, amount: float, at_ms: int) -> RawRecord:
    body = {
        **VALID_TRANSACTION,
        "transaction_id": f"tx-{i}",
        "card_id": card,
        "amount": amount,
        "event_time": datetime.fromtimestamp(at_ms / 1000 - 1, UTC).isoformat(),
    }
    return (i, card.encode(), json.dumps(body).encode(), at_ms)


def profile(offset: int, card: str, mean: float, std: float | None, at_ms: int) -> RawRecord:
    value = CardProfile(
        card_id=card,
        txn_count=30,
        home_country="FR",
        amount_mean=mean,
        amount_std=std,
        usual_hours=[12],
        usual_mccs=["5411"],
        last_event_time="2026-02-28T12:00:00Z",
        computed_at="2026-03-01T11:00:00Z",
        window_days=30,
    )
    return (offset, card.encode(), encode(value), at_ms)


def flagged(p: PartitionProcessor, records: list[RawRecord], table: list[RawRecord]) -> set[str]:
    """The transactions the profile rule flagged in one batch."""
    out = p.process(SourceBatch(0, records, records[-1][0] + 1, table=table), T0_MS * 1000)
    return {a.transaction_id for a in out.batch.alerts if a.rule == PROFILE_AMOUNT}


def test_a_profile_changes_decisions_only_for_transactions_after_it() -> None:
    p = PartitionProcessor(0, FlowConfig())
    # Read in one batch, but the profile (at T0 + 1 s) sits between the two large ones.
    records = [txn(1, "card-a", 900.0, T0_MS), txn(2, "card-a", 900.0, T0_MS + 2000)]
    table = [profile(0, "card-a", mean=200.0, std=50.0, at_ms=T0_MS + 1000)]
    assert flagged(p, records, table) == {"tx-2"}
    # In force from now on: above max(200 + 4 x 50, 3 x 200, the spike minimum 500) =
    # 600 is flagged, below is not.
    later = [txn(3, "card-a", 599.0, T0_MS + 3000), txn(4, "card-a", 601.0, T0_MS + 4000)]
    assert flagged(p, later, []) == {"tx-4"}

    # A small card's profile: the spike minimum (500) still bounds it below.
    small = [profile(1, "card-b", mean=20.0, std=5.0, at_ms=T0_MS)]
    tiny = [txn(5, "card-b", 499.0, T0_MS + 5000), txn(6, "card-b", 501.0, T0_MS + 6000)]
    assert flagged(p, tiny, small) == {"tx-6"}


def test_cards_without_a_profile_are_not_judged_by_it() -> None:
    p = PartitionProcessor(0, FlowConfig())
    table = [
        profile(0, "card-a", mean=20.0, std=5.0, at_ms=T0_MS),
        profile(1, "card-b", mean=20.0, std=None, at_ms=T0_MS),  # one transaction: no spread
    ]
    records = [
        txn(1, "card-a", 900.0, T0_MS + 1000),
        txn(2, "card-b", 900.0, T0_MS + 1000),  # no spread known
        txn(3, "card-c", 900.0, T0_MS + 1000),  # no profile at all
    ]
    assert flagged(p, records, table) == {"tx-1"}


def test_a_newer_profile_replaces_the_old_and_a_tombstone_withdraws_it() -> None:
    p = PartitionProcessor(0, FlowConfig())
    table = [profile(0, "card-a", mean=20.0, std=5.0, at_ms=T0_MS)]
    assert flagged(p, [txn(1, "card-a", 550.0, T0_MS + 1000)], table) == {"tx-1"}
    bigger = [profile(1, "card-a", mean=200.0, std=50.0, at_ms=T0_MS + 2000)]
    assert flagged(p, [txn(2, "card-a", 550.0, T0_MS + 3000)], bigger) == set()
    withdrawn = [(2, b"card-a", None, T0_MS + 4000)]
    assert flagged(p, [txn(3, "card-a", 5000.0, T0_MS + 5000)], withdrawn) == set()
    assert "card-a" not in p.profiles


def test_profiles_survive_a_snapshot_and_the_table_read_again_does_not_regress() -> None:
    p = PartitionProcessor(0, FlowConfig())
    old = profile(0, "card-a", mean=20.0, std=5.0, at_ms=T0_MS)
    new = profile(1, "card-a", mean=200.0, std=50.0, at_ms=T0_MS + 2000)
    flagged(p, [txn(1, "card-a", 30.0, T0_MS + 3000)], [old, new])
    restored = pickle.loads(pickle.dumps(p))
    restored.configure(FlowConfig())
    assert restored.profiles == p.profiles
    # A restart reads the whole table again: the older profile must not come back.
    assert flagged(restored, [txn(2, "card-a", 550.0, T0_MS + 4000)], [old, new]) == set()
    assert restored.profiles["card-a"].mean_cents == 20_000


def test_a_snapshot_from_before_the_join_restores_without_profiles() -> None:
    p = PartitionProcessor(0, FlowConfig())
    state = p.__getstate__()
    del state["profiles"], state["pending_profiles"]
    old = PartitionProcessor.__new__(PartitionProcessor)
    old.__setstate__(state)
    assert old.profiles == {} and old.pending_profiles == []


def test_an_unreadable_profile_is_skipped() -> None:
    p = PartitionProcessor(0, FlowConfig())
    table = [(0, b"card-a", b"{not json", T0_MS), profile(1, "card-b", 20.0, 5.0, T0_MS)]
    records = [txn(1, "card-a", 900.0, T0_MS + 1), txn(2, "card-b", 900.0, T0_MS + 1)]
    assert flagged(p, records, table) == {"tx-2"}
