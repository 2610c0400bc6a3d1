"""What the generator emits: a message and its ground truth (fraud kind, pattern,
late, resent, invalid), and the fraud kinds the payments flow detects."""

from __future__ import annotations

from typing import Final

import msgspec

VELOCITY: Final = "velocity"
AMOUNT_SPIKE: Final = "amount_spike"
IMPOSSIBLE_TRAVEL: Final = "impossible_travel"
CARD_TESTING: Final = "card_testing"
FRAUD_KINDS: Final = (VELOCITY, AMOUNT_SPIKE, IMPOSSIBLE_TRAVEL, CARD_TESTING)


class GeneratedEvent(msgspec.Struct, frozen=True, gc=False):
    """One message to publish and its ground truth.

    ``key``/``value`` are the bytes on the wire; the rest is the label and is
    never published. ``fraud_kind`` is set on the transactions a rule should
    flag; ``pattern_id`` groups every event of one injected pattern, including
    the innocent-looking setup transactions (fraud_kind None) that precede a
    spike or an impossible journey. A msgspec Struct rather than a dataclass
    because one is built per event and Struct creation is several times cheaper.
    """

    key: bytes
    value: bytes
    transaction_id: str
    card_id: str
    event_time: float  # seconds since the epoch, UTC
    fraud_kind: str | None = None
    pattern_id: int | None = None
    late: bool = False
    resent: bool = False
    invalid_reason: str | None = None

    @property
    def valid(self) -> bool:
        return self.invalid_reason is None
