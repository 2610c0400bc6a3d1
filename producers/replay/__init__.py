"""``riverbed replay``: publish a recorded CSV to a domain's topic on its own schedule.

- :mod:`.domains`: per domain, its topics, key, id field and contract;
- :mod:`.recording`: the CSV, its rows with their line numbers and original text;
- :mod:`.mapping`: ``--map``, ``--set``, ``--id-column`` and the time column, checked
  before anything is sent;
- :mod:`.schedule`: when each row is sent and with what event time (injected clock);
- :mod:`.run`: the replay loop and the Kafka producer it uses; the summary;
- :mod:`.recordings`: real recordings shipped inside installed packages;
- :mod:`.cli`: what ``riverbed replay`` runs.
"""

from producers.replay.domains import DOMAINS, Domain, ReplayError, domain
from producers.replay.run import Outgoing, Replayer, ReplayOptions, ReplaySummary, replay
from producers.replay.schedule import Clock, Schedule, SystemClock

__all__ = [
    "DOMAINS",
    "Clock",
    "Domain",
    "Outgoing",
    "ReplayError",
    "ReplayOptions",
    "ReplaySummary",
    "Replayer",
    "Schedule",
    "SystemClock",
    "domain",
    "replay",
]
