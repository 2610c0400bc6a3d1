"""Batch features as assets, computed with polars from the lake and published to
compacted topics for the stream to use: card profiles (``payments.card_profiles``)
and device baselines (``iot.device_baselines``)."""

import dagster as dg

from orchestration.lib.keys import lake_key, topic_key
from orchestration.lib.settings import RiverbedResource
from riverbed import baselines, features
from riverbed.topics import IOT_DEVICE_BASELINES, PAYMENTS_CARD_PROFILES

CARD_PROFILES_KEY = dg.AssetKey(["features", "card_profiles"])
DEVICE_BASELINES_KEY = dg.AssetKey(["features", "device_baselines"])


@dg.asset(
    key=CARD_PROFILES_KEY,
    deps=[lake_key("payments", "transactions"), topic_key(PAYMENTS_CARD_PROFILES)],
    group_name="features",
    kinds={"polars", "kafka"},
    description=(
        "A profile per card (home country, typical amount and its spread, usual hours of "
        "day, usual merchant categories) over the last RIVERBED_PROFILE_WINDOW_DAYS of the "
        "lake's transactions, for cards with RIVERBED_PROFILE_MIN_TXNS or more; published "
        f"to `{PAYMENTS_CARD_PROFILES}` (compacted, keyed by card_id)."
    ),
)
def card_profiles(context: dg.AssetExecutionContext, riverbed: RiverbedResource):
    settings = riverbed.settings()
    profiles = features.card_profiles(settings)
    published = features.publish_card_profiles(settings, profiles)
    context.log.info(f"published {published.records} card profiles to {published.topic}")
    counts = profiles.get_column("txn_count")
    return dg.MaterializeResult(
        metadata={
            "profiles": published.records,
            "topic": published.topic,
            "window_days": settings.profile_window_days,
            "min_txns": settings.profile_min_txns,
            "median_txns_per_card": float(counts.median()) if profiles.height else 0.0,
        }
    )


@dg.asset(
    key=DEVICE_BASELINES_KEY,
    # The IoT lake table as the lake assets name it (orchestration.lib.keys.lake_key): the
    # edge holds whether or not the IoT flow's tables are declared as assets yet.
    deps=[lake_key("iot", "readings"), topic_key(IOT_DEVICE_BASELINES)],
    group_name="features",
    kinds={"polars", "kafka"},
    description=(
        "A baseline per device: per UTC hour of day and measurement, the mean, sample "
        "standard deviation and count of its on-time readings over the last "
        "RIVERBED_BASELINE_WINDOW_DAYS of the lake's readings, for devices with "
        f"RIVERBED_BASELINE_MIN_READINGS or more; published to `{IOT_DEVICE_BASELINES}` "
        "(compacted, keyed by device_id)."
    ),
)
def device_baselines(context: dg.AssetExecutionContext, riverbed: RiverbedResource):
    settings = riverbed.settings()
    computed = baselines.device_baselines(settings)
    published = baselines.publish_device_baselines(settings, computed)
    context.log.info(f"published {published.records} device baselines to {published.topic}")
    counts = computed.get_column("reading_count")
    return dg.MaterializeResult(
        metadata={
            "baselines": published.records,
            "topic": published.topic,
            "window_days": settings.baseline_window_days,
            "min_readings": settings.baseline_min_readings,
            "median_readings_per_device": float(counts.median()) if computed.height else 0.0,
        }
    )


defs = dg.Definitions(assets=[card_profiles, device_baselines])
