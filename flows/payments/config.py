"""What the payments flow's logic needs from the settings, as plain numbers.

The pure classes (processor, windows, fraud) take a :class:`FlowConfig`, not the
settings, so tests build one directly and the logic never reads the environment.
Times are integer microseconds: event times are compared exactly and the state
pickles small.
"""

from __future__ import annotations

from dataclasses import dataclass

from riverbed.settings import Settings

US = 1_000_000
MINUTE_US = 60 * US
HOUR_US = 60 * MINUTE_US


@dataclass(frozen=True)
class FlowConfig:
    allowed_lateness_us: int = 30 * US
    window_us: int = MINUTE_US
    # A resend is recognised while its original is among the card's last
    # ``resend_max_per_card`` transactions and within ``resend_ttl_us`` event time.
    # The ids are snapshotted with the processor every epoch, so their number
    # (about rate x TTL) is what a snapshot costs: 10 minutes and 32 per card keep
    # it to tens of MB at 5,000 events/s over 100,000+ cards. Producers resend
    # within seconds.
    resend_ttl_us: int = 10 * MINUTE_US
    resend_max_per_card: int = 32
    # A card unseen for this long (event time) is forgotten: its running mean too.
    card_ttl_us: int = HOUR_US
    velocity_count: int = 5
    velocity_window_us: int = MINUTE_US
    spike_min_cents: int = 50_000
    spike_factor: float = 5.0
    travel_kmh: float = 900.0
    # Two transactions closer than this are one place, whatever the time between them:
    # merchants of one city are kilometres apart, and a card may pay at two of them
    # seconds apart (and card terminals report their merchant's address, not the card's).
    travel_min_km: float = 50.0
    testing_count: int = 3
    testing_max_cents: int = 200
    testing_window_us: int = 10 * MINUTE_US
    # profile_amount: against the card's profile from the batch layer.
    profile_sigmas: float = 4.0
    profile_min_factor: float = 3.0
    profile_min_txns: int = 5
    # How long (event time) the window merger keeps a closed window for corrections.
    correction_retention_us: int = HOUR_US

    @classmethod
    def from_settings(cls, settings: Settings) -> FlowConfig:
        return cls(
            allowed_lateness_us=round(settings.allowed_lateness_s * US),
            window_us=settings.window_s * US,
            velocity_count=settings.fraud_velocity_count,
            velocity_window_us=round(settings.fraud_velocity_window_s * US),
            spike_min_cents=round(settings.fraud_spike_min_amount * 100),
            spike_factor=settings.fraud_spike_factor,
            travel_kmh=settings.fraud_travel_kmh,
            travel_min_km=settings.fraud_travel_min_km,
            testing_count=settings.fraud_testing_count,
            testing_max_cents=round(settings.fraud_testing_max_amount * 100),
            testing_window_us=round(settings.fraud_testing_window_s * US),
            profile_sigmas=settings.fraud_profile_sigmas,
            profile_min_factor=settings.fraud_profile_min_factor,
            profile_min_txns=settings.profile_min_txns,
        )
