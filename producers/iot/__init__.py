"""The IoT producer: sensor readings of a simulated building for ``iot.readings``, with
the rooms' true occupancy and labelled faults and noise.

- :mod:`.events`: what is emitted, a message and its ground truth (``GeneratedReading``),
  the fault kinds, and an injected episode (``FaultEpisode``);
- :mod:`.building`: the generator's settings (``IotConfig``), rooms and devices;
- :mod:`.occupancy`: who is in which room when (the ground truth);
- :mod:`.physics`: what a room's air and light are, given who has been in it;
- :mod:`.faults`: how far spikes go, how drifts grow, how long episodes last;
- :mod:`.wire`: the reading JSON, and the ways a malformed message is broken;
- :mod:`.generator`: the seeded ``IotGenerator``;
- :mod:`.cli`: ``produce_iot``, what ``riverbed produce iot`` runs.
"""

from producers.iot.building import DEVICE_METRICS, IotConfig
from producers.iot.cli import produce_iot
from producers.iot.events import (
    CLOCK_SKEW,
    DRIFT,
    DROPOUT,
    EPISODE_KINDS,
    FAULT_KINDS,
    FLATLINE,
    SPIKE_BASELINE,
    SPIKE_RANGE,
    FaultEpisode,
    GeneratedReading,
)
from producers.iot.faults import PLAUSIBLE, SPIKE_MIN_DEVIATION
from producers.iot.generator import IotGenerator
from producers.iot.wire import INVALID_KINDS

__all__ = [
    "CLOCK_SKEW",
    "DEVICE_METRICS",
    "DRIFT",
    "DROPOUT",
    "EPISODE_KINDS",
    "FAULT_KINDS",
    "FLATLINE",
    "INVALID_KINDS",
    "PLAUSIBLE",
    "SPIKE_BASELINE",
    "SPIKE_MIN_DEVIATION",
    "SPIKE_RANGE",
    "FaultEpisode",
    "GeneratedReading",
    "IotConfig",
    "IotGenerator",
    "produce_iot",
]
