"""Property-based tests of the transaction decoder (Hypothesis): whatever the bytes, the
answer is a transaction or an InvalidEvent naming the field, and the flow's processor
stays up and accounts for every message."""

import json
import math

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.kit.records import SourceBatch
from flows.payments.config import FlowConfig
from flows.payments.processor import PartitionProcessor
from riverbed.contracts.payments import (
    InvalidEvent,
    Transaction,
    check_rules,
    decode_transaction,
    decode_transaction_at,
)
from riverbed.contracts.wire import decode_error, micros
from tests.support.transactions import NOW, VALID_TRANSACTION

FIELDS = (
    "transaction_id",
    "card_id",
    "merchant_id",
    "mcc",
    "amount",
    "currency",
    "country",
    "lat",
    "lon",
    "channel",
    "event_time",
)
# Nothing is written to disk (no example database), and runs are repeatable.
FUZZ = settings(
    database=None,
    derandomize=True,
    deadline=None,
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow],
)

# Values of every JSON type, including the ones that trip naive checks: NaN and
# infinities (Python's json writes them), huge integers, odd strings, nesting.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "",
            " ",
            "EUR",
            "FR",
            "pos",
            "5411",
            "2026-11-25T11:59:00Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-23:59",
            "2026-02-30T00:00:00Z",
            "\ufeff2026-11-25T11:59:00Z",
        ]
    )
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
# Objects with the contract's keys (some missing, some extra), so the rules after
# decoding are reached, not only the JSON parser.
events = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=len(FIELDS) + 2
).map(lambda e: json.dumps(e).encode())
near_valid = st.fixed_dictionaries({f: json_values for f in FIELDS}).map(
    lambda e: json.dumps(e).encode()
)
garbage = st.binary(max_size=300)
messages = events | near_valid | garbage
# Valid transactions too (a few ids, so some are resends), for the processor's sake.
valid = st.integers(0, 5).map(
    lambda i: json.dumps({**VALID_TRANSACTION, "transaction_id": f"t-{i}"}).encode()
)


def outcome(raw: bytes) -> str:
    """'valid' or 'invalid'; anything else raised fails the test."""
    try:
        txn, event_time = decode_transaction(raw, NOW)
    except InvalidEvent as exc:
        field = str(exc).split(":", 1)[0]
        assert field in {*FIELDS, "value"}, str(exc)
        return "invalid"
    assert event_time.tzinfo is not None and event_time.utcoffset().total_seconds() == 0
    assert 0 < txn.amount <= 1_000_000 and not math.isnan(txn.lat)
    return "valid"


@FUZZ
@given(messages)
def test_any_bytes_give_a_transaction_or_a_named_contract_error(raw: bytes) -> None:
    outcome(raw)


@FUZZ
@given(garbage.map(lambda b: b'{"transaction_id":"' + b + b'"}'))
def test_strings_that_are_not_utf8_are_a_contract_error(raw: bytes) -> None:
    outcome(raw)


@settings(FUZZ, max_examples=150)
@given(st.lists(messages | valid | st.none(), min_size=1, max_size=40))
def test_the_processor_accounts_for_every_message_and_stays_up(values: list) -> None:
    processor = PartitionProcessor(0, FlowConfig())
    stamp = int(NOW.timestamp() * 1000)
    records = [(offset, b"k", value, stamp) for offset, value in enumerate(values)]
    out = processor.process(SourceBatch(0, records, len(records)), 0)
    counts = out.batch.counts
    assert counts.processed == len(values)
    assert counts.valid + counts.invalid + counts.resent == len(values)
    assert len(out.batch.dlq) == counts.invalid
    # nothing was filed as "cannot be checked": every rejection is a named rule
    assert not [d for d in out.batch.dlq if "cannot be checked" in d.error]


def test_known_hostile_inputs() -> None:
    hostile = [
        b"\xff\xfe{}",  # a UTF-16 byte-order mark
        b'{"transaction_id":"\xed\xa0\x80"}',  # a UTF-8-encoded surrogate
        b"[" * 100_000 + b"]" * 100_000,  # nesting 100,000 deep
        b'{"amount": NaN}',
        b'{"amount": Infinity}',
    ]
    assert [outcome(raw) for raw in hostile] == ["invalid"] * len(hostile)


# The contract's rules alone: a plain decoder (types only) and check_rules, all in Python.
_plain = msgspec.json.Decoder(Transaction)


def by_the_rules(raw: bytes | None, now_us: int) -> tuple:
    if raw is None:
        return ("invalid", "value: message has no value (tombstone)")
    try:
        txn = _plain.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return ("invalid", str(decode_error(exc)))
    try:
        return ("valid", msgspec.structs.astuple(txn), check_rules(txn, now_us))
    except InvalidEvent as exc:
        return ("invalid", str(exc))


def as_decoded(raw: bytes | None, now_us: int) -> tuple:
    try:
        txn, event_us = decode_transaction_at(raw, now_us)
    except InvalidEvent as exc:
        return ("invalid", str(exc))
    assert isinstance(txn, Transaction)
    return ("valid", msgspec.structs.astuple(txn), event_us)


# A valid transaction with one field replaced: reaches each rule on its own.
one_off = st.tuples(st.sampled_from(FIELDS), json_values | st.floats()).map(
    lambda fv: json.dumps({**VALID_TRANSACTION, fv[0]: fv[1]}).encode()
)


@settings(FUZZ, max_examples=1000)
@given(messages | valid | one_off | st.none())
def test_the_checked_decoder_gives_the_verdicts_and_reasons_of_the_rules(raw: bytes) -> None:
    """decode_transaction_at checks most rules inside msgspec (C), then the rest; its
    verdicts, values and DLQ reasons must be exactly those of the rules in Python."""
    now_us = micros(NOW)
    assert as_decoded(raw, now_us) == by_the_rules(raw, now_us)


def test_the_checked_decoder_turns_away_each_rule_by_its_own_reason() -> None:
    now_us = micros(NOW)
    broken = {
        "transaction_id": " ",
        "mcc": "54a1",
        "amount": 0,
        "currency": "XXX",
        "country": "ZZ",
        "lat": 91.0,
        "lon": -180.5,
        "channel": "mail",
        "event_time": "2026-11-25 12:00:00",
    }
    for field, value in broken.items():
        raw = json.dumps({**VALID_TRANSACTION, field: value}).encode()
        verdict = as_decoded(raw, now_us)
        assert verdict[0] == "invalid" and verdict[1].startswith(f"{field}:"), verdict
        assert verdict == by_the_rules(raw, now_us)
    assert as_decoded(json.dumps(VALID_TRANSACTION).encode(), now_us)[0] == "valid"
