"""The payments producer: realistic card transactions for ``payments.transactions``,
with labelled fraud and noise.

- :mod:`.events`: what is emitted, a message and its ground truth (``GeneratedEvent``);
- :mod:`.reference`: real cities and merchant categories;
- :mod:`.population`: the generator's settings (``GeneratorConfig``), cards and merchants;
- :mod:`.wire`: the transaction JSON, and the ways an invalid message is broken;
- :mod:`.generator`: the seeded ``PaymentsGenerator`` (how normal traffic stays clear of
  the fraud rules, and how time advances, is in its docstring);
- :mod:`.cli`: ``produce_payments``, what ``riverbed produce payments`` runs.
"""

from producers.payments.cli import produce_payments
from producers.payments.events import (
    AMOUNT_SPIKE,
    CARD_TESTING,
    FRAUD_KINDS,
    IMPOSSIBLE_TRAVEL,
    VELOCITY,
    GeneratedEvent,
)
from producers.payments.generator import PaymentsGenerator
from producers.payments.population import GeneratorConfig
from producers.payments.reference import CITIES, haversine_km
from producers.payments.wire import INVALID_KINDS, format_event_time

__all__ = [
    "AMOUNT_SPIKE",
    "CARD_TESTING",
    "CITIES",
    "FRAUD_KINDS",
    "IMPOSSIBLE_TRAVEL",
    "INVALID_KINDS",
    "VELOCITY",
    "GeneratedEvent",
    "GeneratorConfig",
    "PaymentsGenerator",
    "format_event_time",
    "haversine_km",
    "produce_payments",
]
