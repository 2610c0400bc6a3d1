"""What the IoT flow's logic needs from the settings, as plain numbers (see
:mod:`flows.payments.config` for why: tests build one directly, times are integer µs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from riverbed.settings import Settings

US = 1_000_000
MINUTE_US = 60 * US

# The plausible indoor range of each measurement: outside it (but inside the contract's
# physical range) a reading is a `range` anomaly. Not settings: they are what an office
# or a home can be, whatever the deployment.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "temperature_c": (5.0, 40.0),
    "humidity_pct": (10.0, 90.0),
    "light_lux": (0.0, 20_000.0),
    "co2_ppm": (350.0, 5_000.0),
}

# The smallest spread the `baseline` rule divides by, per measurement. A baseline hour
# computed from quiet history (a few similar days, an empty room) can have a spread
# far below what rooms do from one day to the next (a meeting, clouds, the heating):
# judged by it, ordinary readings would be "many deviations" off. These are about a
# sensor's accuracy plus a room's ordinary day-to-day swing.
SPREAD_FLOOR: dict[str, float] = {
    "temperature_c": 1.0,
    "humidity_pct": 3.0,
    "light_lux": 200.0,
    "co2_ppm": 150.0,
}


@dataclass(frozen=True)
class IotConfig:
    allowed_lateness_us: int = 30 * US
    window_us: int = 5 * MINUTE_US
    hop_us: int = MINUTE_US
    plausible: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(PLAUSIBLE))
    spread_floor: dict[str, float] = field(default_factory=lambda: dict(SPREAD_FLOOR))
    baseline_sigmas: float = 4.0
    baseline_min_readings: int = 10
    flatline_readings: int = 30
    dropout_us: int = 2 * MINUTE_US
    # A resend is recognised while its original is among the device's last this many.
    resend_memory: int = 64
    join_interval_us: int = 30 * US
    occupied_lux: float = 250.0
    occupied_co2_ppm: float = 600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> IotConfig:
        return cls(
            allowed_lateness_us=round(settings.allowed_lateness_s * US),
            window_us=settings.iot_window_s * US,
            hop_us=settings.iot_hop_s * US,
            baseline_sigmas=settings.iot_baseline_sigmas,
            baseline_min_readings=settings.iot_baseline_min_readings,
            flatline_readings=settings.iot_flatline_readings,
            dropout_us=round(settings.iot_dropout_s * US),
            join_interval_us=round(settings.iot_join_interval_s * US),
            occupied_lux=settings.iot_occupied_lux,
            occupied_co2_ppm=settings.iot_occupied_co2_ppm,
        )
