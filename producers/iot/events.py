"""What the IoT generator emits: a message and its ground truth (the room's true
occupancy, the fault the reading shows, resent, invalid), and the fault kinds.

The ground truth is never published: it rides beside the bytes so that a test can
hold the flow's anomalies and its derived occupancy against what really happened.
"""

from __future__ import annotations

from typing import Final

import msgspec

# Single readings far from normal: outside a plausible indoor range (but inside the
# contract's physical RANGES, so the contract accepts them), or inside it but far
# from what the device usually reads. Named after the flow rules meant to find them.
SPIKE_RANGE: Final = "spike_range"
SPIKE_BASELINE: Final = "spike_baseline"
# Episodes of one device.
DRIFT: Final = "drift"  # one metric's offset grows slowly for hours, then is gone
FLATLINE: Final = "flatline"  # the device repeats its exact last reading for minutes
DROPOUT: Final = "dropout"  # the device is silent for minutes
CLOCK_SKEW: Final = "clock_skew"  # the device's event_time is off by a constant
FAULT_KINDS: Final = (SPIKE_RANGE, SPIKE_BASELINE, DRIFT, FLATLINE, DROPOUT, CLOCK_SKEW)
EPISODE_KINDS: Final = (DRIFT, FLATLINE, DROPOUT, CLOCK_SKEW)


class GeneratedReading(msgspec.Struct, frozen=True, gc=False):
    """One message to publish and its ground truth.

    ``key``/``value`` are the bytes on the wire; the rest is the label.

    - ``true_time``: when the device measured and sent the reading (seconds since the
      epoch, UTC); ``event_time``: the time the message carries, which differs from it
      only under clock skew (by the episode's ``skew_s``).
    - ``occupied``/``people``: the room's true occupancy at ``true_time``.
    - ``fault``: the fault the reading shows, one of :data:`FAULT_KINDS`, with
      ``fault_id`` naming the injected spike or episode. A dropout has no readings of
      its own: the reading that ends the silence carries the label. ``metric`` is the
      measurement a spike or drift changed and ``clean`` what it would have read
      without the fault.
    - ``resent``: a byte-for-byte copy of an earlier reading (same ``reading_id``).
    - ``invalid_reason``: the kind of contract violation (see
      :data:`producers.iot.wire.INVALID_KINDS`), for a malformed message; its other
      labels are those of the reading it was made from, sent at the same moment.
    """

    key: bytes
    value: bytes
    reading_id: str
    device_id: str
    room_id: str
    true_time: float
    event_time: float
    occupied: bool
    people: int
    fault: str | None = None
    fault_id: int | None = None
    metric: str | None = None
    clean: float | None = None
    resent: bool = False
    invalid_reason: str | None = None

    @property
    def valid(self) -> bool:
        return self.invalid_reason is None


class FaultEpisode(msgspec.Struct, frozen=True):
    """An injected episode on one device, from ``start`` to ``end`` of true time.

    ``metric``: the drifting measurement (None for the other kinds). ``magnitude``: a
    drift's offset at ``end``, or a clock skew's offset in seconds (0 otherwise).
    """

    fault_id: int
    kind: str
    device_id: str
    room_id: str
    start: float
    end: float
    metric: str | None = None
    magnitude: float = 0.0
