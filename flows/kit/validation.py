"""Decoding a batch's messages against a domain's contract, dead-lettering the rest.

Every domain's processor does the same with a message before its own logic: decode
and check it (``decode(value, now)`` from :mod:`riverbed.contracts`), where "now" is
the message's Kafka timestamp, not the wall clock (a replay of a backlog days later
gives the live run's verdicts), and send a message that fails to the DLQ with the
reason. One bad message never stops the flow: an unexpected error in the checks (a
date that overflows when converted to UTC) makes the message invalid too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from flows.kit.records import Counts, DlqRecord
from riverbed.contracts.wire import InvalidEvent

log = logging.getLogger("riverbed.flow.validation")

E = TypeVar("E")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


class Validator(Generic[E]):
    """One batch's decoder: ``validator(offset, key, value, ts_ms)`` gives the event and
    its event time in µs, or None when the message went to ``dlq`` (counted invalid)."""

    __slots__ = ("_decode", "_last_ts", "_now", "counts", "dlq")

    def __init__(
        self,
        decode: Callable[[bytes | None, datetime], tuple[E, datetime]],
        counts: Counts,
        dlq: list[DlqRecord],
    ) -> None:
        self._decode = decode
        self.counts = counts
        self.dlq = dlq
        self._last_ts: int | None = None
        self._now = _EPOCH

    def __call__(
        self, offset: int, key: bytes | None, value: bytes | None, ts_ms: int
    ) -> tuple[E, int] | None:
        if ts_ms != self._last_ts:  # a producer batch shares one timestamp
            self._last_ts = ts_ms
            self._now = _EPOCH + timedelta(milliseconds=ts_ms) if ts_ms >= 0 else datetime.now(UTC)
        try:
            event, event_time = self._decode(value, self._now)
        except InvalidEvent as exc:
            self._invalid(offset, key, value, str(exc))
            return None
        except Exception as exc:
            reason = f"value: cannot be checked ({type(exc).__name__}: {exc})"
            self._invalid(offset, key, value, reason)
            log.warning("unexpected validation error", extra={"offset": offset, "err": reason})
            return None
        return event, (event_time - _EPOCH) // _ONE_US

    def _invalid(self, offset: int, key: bytes | None, value: bytes | None, reason: str) -> None:
        self.counts.invalid += 1
        self.dlq.append(DlqRecord(offset, key, value, reason))
