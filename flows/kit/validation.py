"""Decoding a batch's messages against a domain's contract, dead-lettering the rest.

Every domain's processor does the same with a message before its own logic: decode
and check it (``decode(value, now_us)``, a contract's ``decode_..._at`` from
:mod:`riverbed.contracts`), where "now" is the message's Kafka timestamp, not the wall
clock (a replay of a backlog days later gives the live run's verdicts), and send a
message that fails to the DLQ with the reason. One bad message never stops the flow:
an unexpected error in the checks (a date that overflows when converted to UTC) makes
the message invalid too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from flows.kit.records import Counts, DlqRecord
from riverbed.contracts.wire import InvalidEvent

log = logging.getLogger("riverbed.flow.validation")

E = TypeVar("E")


class Validator(Generic[E]):
    """One batch's decoder: ``validator(offset, key, value, ts_ms)`` gives the event and
    its event time in µs, or None when the message went to ``dlq`` (counted invalid)."""

    __slots__ = ("_decode", "counts", "dlq")

    def __init__(
        self,
        decode: Callable[[bytes | None, int | None], tuple[E, int]],
        counts: Counts,
        dlq: list[DlqRecord],
    ) -> None:
        self._decode = decode
        self.counts = counts
        self.dlq = dlq

    def __call__(
        self, offset: int, key: bytes | None, value: bytes | None, ts_ms: int
    ) -> tuple[E, int] | None:
        try:
            # No Kafka timestamp (-1): the contract judges against the wall clock.
            return self._decode(value, ts_ms * 1000 if ts_ms >= 0 else None)
        except InvalidEvent as exc:
            self._invalid(offset, key, value, str(exc))
            return None
        except Exception as exc:
            reason = f"value: cannot be checked ({type(exc).__name__}: {exc})"
            self._invalid(offset, key, value, reason)
            log.warning("unexpected validation error", extra={"offset": offset, "err": reason})
            return None

    def _invalid(self, offset: int, key: bytes | None, value: bytes | None, reason: str) -> None:
        self.counts.invalid += 1
        self.dlq.append(DlqRecord(offset, key, value, reason))
