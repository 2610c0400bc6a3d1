"""The per-Kafka-partition processor: validation, resends, fraud, lateness, windows.

One :class:`PartitionProcessor` per partition of ``payments.transactions``;
the dataflow keys its stream by partition, so each processor sees its
partition's messages in offset order, whichever worker runs it. Pure Python
and picklable: Bytewax snapshots it, tests drive it directly.

Nothing here reads the wall clock except ``detected_at`` (passed in). The
"not more than 5 minutes in the future" check compares the event time with
the message's Kafka timestamp, not with now, so replaying a backlog days
later gives the same verdicts as the live run did.
"""

from __future__ import annotations

import heapq
import logging

import msgspec

from flows.kit.records import Counts, DlqRecord, ProcessedBatch, RawRecord, SourceBatch
from flows.kit.validation import Validator
from flows.payments.config import FlowConfig
from flows.payments.fraud import (
    CardState,
    FraudRules,
    Profile,
    alert_id,
    decode_cards,
    decode_profiles,
    encode_cards,
    encode_profiles,
)
from flows.payments.records import AlertRecord, MergerInput, ProcessorOutput, TxnColumns
from flows.payments.windows import PartitionWindows
from riverbed.contracts.payments import (
    Alert,
    Transaction,
    decode_profile,
    decode_transaction_at,
    encode,
)
from riverbed.contracts.wire import rfc3339

log = logging.getLogger("riverbed.flow.processor")

# Forgetting idle cards costs a scan of them all: do it once per this much event time.
_SWEEP_EVERY_US = 60_000_000


class PartitionProcessor:
    def __init__(self, partition: int, config: FlowConfig) -> None:
        self.partition = partition
        self.config = config
        self.cards: dict[str, CardState] = {}
        self.windows = PartitionWindows(config)
        self.idle = False
        self._reported_bucket: int | None = None  # watermark // window last told the merger
        self._told_merger = False
        self._last_sweep_us: int | None = None
        # The table side of the stream-table join: each card's profile in force, and
        # profiles read but not in force yet (a heap by Kafka timestamp, then offset):
        # a profile applies to the transactions after it in the stream, those with a
        # Kafka timestamp at or after its own.
        self.profiles: dict[str, Profile] = {}
        self.pending_profiles: list[tuple[int, int, str, Profile | None]] = []

    # The config is not state: a restart takes the settings it runs with (except
    # the window length, which open windows were built with).
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["config"]
        state["cards"] = encode_cards(self.cards)
        state["profiles"] = encode_profiles(self.profiles)
        return state

    def __setstate__(self, state: dict) -> None:
        state["cards"] = decode_cards(state["cards"])
        # A snapshot from before the join has no profiles: none are in force.
        state["profiles"] = decode_profiles(state["profiles"]) if "profiles" in state else {}
        state.setdefault("pending_profiles", [])
        self.__dict__.update(state)

    def configure(self, config: FlowConfig) -> None:
        """Attach the config after unpickling."""
        self.config = config
        self.windows.lateness_us = config.allowed_lateness_us

    def process(self, batch: SourceBatch, detected_us: int) -> ProcessorOutput:
        # The hot loop: about a million messages a second pass through here on a
        # busy flow, so attribute lookups are hoisted and rare work lives in methods.
        cfg = self.config
        counts = Counts()
        txns = TxnColumns()
        alerts: list[AlertRecord] = []
        dlq: list[DlqRecord] = []
        cards = self.cards
        windows = self.windows
        check = FraudRules(cfg).check
        if batch.table:
            self._read_profiles(batch.table)
        profiles = self.profiles
        pending = self.pending_profiles
        add_id = txns.transaction_id.append
        add_card = txns.card_id.append
        add_merchant = txns.merchant_id.append
        add_mcc = txns.mcc.append
        add_currency = txns.currency.append
        add_country = txns.country.append
        add_lat = txns.lat.append
        add_lon = txns.lon.append
        add_channel = txns.channel.append
        add_cents = txns.amount_cents.append
        add_event = txns.event_us.append
        add_late = txns.late.append
        add_offset = txns.offset.append
        add_produced = txns.produced_ms.append
        validate = Validator(decode_transaction_at, counts, dlq)

        # The partition's newest event time and watermark, as locals: read for every
        # event, they change only when an event is the newest yet.
        newest = windows.max_event_us
        wm = windows.watermark_us
        for offset, key, value, ts_ms in batch.records:
            if pending and pending[0][0] <= ts_ms:
                self._apply_profiles(ts_ms)
            checked = validate(offset, key, value, ts_ms)
            if checked is None:
                continue
            txn, event_us = checked
            card_id = txn.card_id
            card = cards.get(card_id)
            if card is None:
                card = cards[card_id] = CardState()
            if card.seen(txn.transaction_id, event_us, cfg):
                counts.resent += 1
                continue
            late = wm is not None and event_us < wm
            cents = round(txn.amount * 100)
            profile = profiles.get(card_id) if profiles else None
            hits = check(card, txn.transaction_id, event_us, cents, txn.lat, txn.lon, profile)
            if hits:
                self._alerts(txn, event_us, offset, ts_ms, hits, detected_us, alerts, counts)
            if late:
                counts.late += 1
            else:
                windows.add(event_us, txn.merchant_id, card_id, cents, len(hits))
                if newest is None or event_us > newest:
                    windows.observe(event_us)
                    newest, wm = event_us, windows.watermark_us
            add_id(txn.transaction_id)
            add_card(card_id)
            add_merchant(txn.merchant_id)
            add_mcc(txn.mcc)
            add_currency(txn.currency)
            add_country(txn.country)
            add_lat(txn.lat)
            add_lon(txn.lon)
            add_channel(txn.channel)
            add_cents(cents)
            add_event(event_us)
            add_late(late)
            add_offset(offset)
            add_produced(ts_ms)

        counts.processed = len(batch.records)
        counts.valid = len(txns)
        self._sweep_cards()
        processed = ProcessedBatch(
            partition=batch.partition,
            next_offset=batch.next_offset,
            rows=txns,
            alerts=alerts,
            dlq=dlq,
            counts=counts,
            caught_up=batch.caught_up,
            backlog=batch.backlog,
        )
        return ProcessorOutput(processed, self._merger_news(batch.idle))

    def _read_profiles(self, records: list[RawRecord]) -> None:
        """Queue card profiles (key card_id; no value: the card's profile is withdrawn)."""
        for offset, key, value, ts_ms in records:
            if key is None:
                continue
            card = key.decode(errors="replace")
            if value is None:
                heapq.heappush(self.pending_profiles, (ts_ms, offset, card, None))
                continue
            try:
                found = decode_profile(value)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                # The batch layer wrote it; a bad one is skipped, never fatal.
                log.warning("unreadable card profile", extra={"offset": offset, "err": str(exc)})
                continue
            profile = Profile(
                since_ms=ts_ms,
                txn_count=found.txn_count,
                mean_cents=found.amount_mean * 100,
                std_cents=None if found.amount_std is None else found.amount_std * 100,
            )
            heapq.heappush(self.pending_profiles, (ts_ms, offset, card, profile))

    def _apply_profiles(self, upto_ms: int) -> None:
        """Put in force every queued profile stamped at or before ``upto_ms``; one older
        than the card's profile in force (read again after a restart) is dropped."""
        pending, profiles = self.pending_profiles, self.profiles
        while pending and pending[0][0] <= upto_ms:
            since_ms, _offset, card, profile = heapq.heappop(pending)
            current = profiles.get(card)
            if current is not None and current.since_ms > since_ms:
                continue
            if profile is None:
                profiles.pop(card, None)
            else:
                profiles[card] = profile

    @staticmethod
    def _alerts(
        txn: Transaction,
        event_us: int,
        offset: int,
        produced_ms: int,
        hits: list[tuple[str, float, str]],
        detected_us: int,
        out: list[AlertRecord],
        counts: Counts,
    ) -> None:
        detected_at = rfc3339(detected_us)
        for rule, score, details in hits:
            aid = alert_id(rule, txn.transaction_id)
            payload = encode(
                Alert(
                    alert_id=aid,
                    rule=rule,
                    card_id=txn.card_id,
                    transaction_id=txn.transaction_id,
                    event_time=rfc3339(event_us),
                    detected_at=detected_at,
                    score=score,
                    details=details,
                )
            )
            out.append(
                AlertRecord(
                    aid,
                    rule,
                    txn.card_id,
                    txn.transaction_id,
                    event_us,
                    detected_us,
                    score,
                    details,
                    offset,
                    payload,
                    produced_ms,
                )
            )
            counts.alerts[rule] = counts.alerts.get(rule, 0) + 1

    def _merger_news(self, idle: bool) -> MergerInput | None:
        windows = self.windows
        deltas = windows.close_ready()
        if idle:
            deltas.extend(windows.flush_open())
        wm = windows.watermark_us
        bucket = None if wm is None else wm // self.config.window_us
        # The merger only acts at window ends: tell it when the watermark crosses
        # one, not on every tick, so its input stays small.
        news = (
            bool(deltas)
            or idle != self.idle
            or bucket != self._reported_bucket
            or not self._told_merger
        )
        self.idle = idle
        if not news:
            return None
        self._reported_bucket = bucket
        self._told_merger = True
        return MergerInput(self.partition, deltas, wm, idle)

    def _sweep_cards(self) -> None:
        newest = self.windows.max_event_us
        if newest is None:
            return
        if self._last_sweep_us is not None and newest - self._last_sweep_us < _SWEEP_EVERY_US:
            return
        self._last_sweep_us = newest
        horizon = newest - max(self.config.card_ttl_us, self.config.resend_ttl_us)
        # A card prunes its resend ids only when it is seen again, so a card seen once
        # would keep its id for the whole card TTL (at 1M cards, most of the ids in a
        # snapshot): the sweep drops the ids of every card quiet for the resend TTL.
        resend_horizon = newest - self.config.resend_ttl_us
        stale = []
        for cid, card in self.cards.items():
            if card.last_us < resend_horizon:
                if card.last_us < horizon:
                    stale.append(cid)
                elif card.ids:
                    card.ids.clear()
        for cid in stale:
            del self.cards[cid]
