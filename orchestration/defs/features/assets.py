"""Batch features as assets: card profiles computed with polars from the lake and
published to the compacted ``payments.card_profiles`` topic, for the stream to use."""

import dagster as dg

from orchestration.lib.keys import lake_key, topic_key
from orchestration.lib.settings import RiverbedResource
from riverbed import features
from riverbed.topics import PAYMENTS_CARD_PROFILES

CARD_PROFILES_KEY = dg.AssetKey(["features", "card_profiles"])


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
    context.log.info(f"published {published.profiles} card profiles to {published.topic}")
    counts = profiles.get_column("txn_count")
    return dg.MaterializeResult(
        metadata={
            "profiles": published.profiles,
            "topic": published.topic,
            "window_days": settings.profile_window_days,
            "min_txns": settings.profile_min_txns,
            "median_txns_per_card": float(counts.median()) if profiles.height else 0.0,
        }
    )


defs = dg.Definitions(assets=[card_profiles])
