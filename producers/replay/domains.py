"""What a replay needs to know about each domain: its topics, its key, its id field, its
fields and their types, and the contract that judges a row.

The fields come from the contract's own ``msgspec.Struct``, so a field added to a
contract can be mapped from a recording without touching the replay.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import msgspec

from riverbed.contracts import iot, payments
from riverbed.topics import IOT_DLQ, IOT_READINGS, PAYMENTS_DLQ, PAYMENTS_TRANSACTIONS

Decode = Callable[[bytes | None, datetime | None], tuple[Any, datetime]]

# The field every contract takes its time from; a replay fills it from --time-column.
EVENT_TIME = "event_time"


class ReplayError(ValueError):
    """A replay cannot start; ``str()`` says what is wrong and what to do instead."""


@dataclass(frozen=True)
class Domain:
    """One stream a recording can be replayed into."""

    name: str
    topic: str
    dlq: str
    key_field: str  # the message key, as the domain's producers key it
    id_field: str  # unique per real event; derived from file and row when not given
    struct: type[msgspec.Struct]
    decode: Decode

    @cached_property
    def fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in msgspec.structs.fields(self.struct))

    @cached_property
    def number_fields(self) -> frozenset[str]:
        """Fields the contract types as numbers: a CSV cell becomes a JSON number there."""
        return frozenset(f.name for f in msgspec.structs.fields(self.struct) if _is_number(f.type))


def _is_number(annotation: object) -> bool:
    if annotation in (int, float):
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_is_number(arg) for arg in typing.get_args(annotation) if arg is not None)
    return False


DOMAINS: dict[str, Domain] = {
    "iot": Domain(
        name="iot",
        topic=IOT_READINGS,
        dlq=IOT_DLQ,
        key_field="device_id",
        id_field="reading_id",
        struct=iot.Reading,
        decode=iot.decode_reading,
    ),
    "payments": Domain(
        name="payments",
        topic=PAYMENTS_TRANSACTIONS,
        dlq=PAYMENTS_DLQ,
        key_field="card_id",
        id_field="transaction_id",
        struct=payments.Transaction,
        decode=payments.decode_transaction,
    ),
}


def domain(name: str) -> Domain:
    """The domain called ``name``, or a :class:`ReplayError` naming the ones there are."""
    try:
        return DOMAINS[name]
    except KeyError:
        raise ReplayError(
            f"unknown domain {name!r}: replay into one of {', '.join(sorted(DOMAINS))}"
        ) from None
