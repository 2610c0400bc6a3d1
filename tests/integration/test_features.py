"""Card profiles: computed with polars by the Dagster asset, published to the compacted
topic, and equal to an oracle computed in plain SQL (DuckDB) over the same lake."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from confluent_kafka.admin import ConfigResource

from orchestration.defs.features.assets import card_profiles
from orchestration.lib.settings import RiverbedResource
from riverbed import lake
from riverbed.contracts.payments import decode_profile
from riverbed.kafka_admin import admin_client
from riverbed.settings import Settings, load_settings
from riverbed.topics import PAYMENTS_CARD_PROFILES
from tests.support.env import use_settings
from tests.support.flow_harness import read_topic
from tests.support.lake_fixture import SyntheticLake

pytestmark = pytest.mark.kafka

NEWEST = datetime(2026, 3, 31, 18, 0, tzinfo=UTC)


def history(seed: int) -> list[dict]:
    """Cards with a home country, habits and outliers, over 45 days (the profiles' window
    is 30): enough rows that ties, thin cards and old rows all occur."""
    rng = random.Random(seed)
    rows = []
    for c in range(60):
        home = rng.choice(["FR", "DE", "IT", "ES"])
        hours = rng.sample(range(24), 3)
        for i in range(rng.randint(1, 40)):
            rows.append(
                {
                    "transaction_id": f"t-{c}-{i}",
                    "card_id": f"card-{c:02d}",
                    "merchant_id": f"m-{rng.randrange(20)}",
                    "mcc": rng.choice(["5411", "5812", "5999", "4111", "5732"]),
                    "amount": round(rng.lognormvariate(3, 1), 2) + 0.01,
                    "currency": "EUR",
                    "country": home if rng.random() < 0.8 else rng.choice(["US", "GB", "FR"]),
                    "lat": 48.0,
                    "lon": 2.0,
                    "channel": "pos",
                    "event_time": _at(rng, hours, i),
                    "late": False,
                }
            )
    return rows


def _at(rng: random.Random, hours: list[int], i: int) -> datetime:
    """Mostly at one of the card's usual hours, sometimes at any; within 45 days."""
    day = (NEWEST - timedelta(days=rng.randrange(45))).replace(hour=0, minute=0, second=0)
    hour = rng.choice(hours) if rng.random() < 0.75 else rng.randrange(24)
    moment = day + timedelta(hours=hour, minutes=rng.randrange(60))
    return min(moment, NEWEST) if i else NEWEST  # each card's first row: the newest


ORACLE = """
with t as (
    select card_id, country, mcc, amount::double as amount, event_time
    from {scan}
    where event_time > (select max(event_time) from {scan}) - interval {days} day
),
cards as (
    select card_id, count(*) as txn_count, avg(amount) as amount_mean,
           stddev_samp(amount) as amount_std, max(event_time) as last_event_time
    from t group by card_id having count(*) >= {min_txns}
),
countries as (
    select card_id, country, row_number() over (
        partition by card_id order by count(*) desc, country) as rank
    from t group by card_id, country
),
mccs as (
    select card_id, list(mcc order by rank) as usual_mccs from (
        select card_id, mcc, row_number() over (
            partition by card_id order by count(*) desc, mcc) as rank
        from t group by card_id, mcc
    ) where rank <= 3 group by card_id
),
hours as (
    select card_id, list(hour order by hour) as usual_hours from (
        select card_id, hour(event_time at time zone 'UTC') as hour,
               count(*) / sum(count(*)) over (partition by card_id) as share
        from t group by card_id, hour
    ) where share >= 0.1 group by card_id
)
select c.card_id, c.txn_count, k.country as home_country, c.amount_mean, c.amount_std,
       coalesce(h.usual_hours, []) as usual_hours, m.usual_mccs, c.last_event_time
from cards c
join countries k on k.card_id = c.card_id and k.rank = 1
join mccs m on m.card_id = c.card_id
left join hours h on h.card_id = c.card_id
order by c.card_id
"""


def test_profiles_are_published_to_a_compacted_topic_and_match_sql(
    kafka_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(
        **{**kafka_settings.model_dump(exclude_none=True), "home": tmp_path / "riverbed"}
    )
    use_settings(monkeypatch, settings)
    synthetic = SyntheticLake(settings.lake_dir)
    synthetic.commit(
        "transactions", synthetic.offsets.assign(history(seed=11)), rows_per_commit=300
    )

    result = dg.materialize([card_profiles], resources={"riverbed": RiverbedResource()})
    assert result.success
    (event,) = result.get_asset_materialization_events()
    published = event.materialization.metadata["profiles"].value

    con = lake.connect_duckdb()
    try:
        con.execute("set TimeZone = 'UTC'")
        oracle = con.sql(
            ORACLE.format(
                scan=lake.scan_sql(settings.lake_dir, "transactions"),
                days=settings.profile_window_days,
                min_txns=settings.profile_min_txns,
            )
        ).fetchall()
    finally:
        con.close()
    assert 20 < len(oracle) < 60  # some cards are too thin for a profile
    assert published == len(oracle)

    on_topic = {}
    for message in read_topic(settings, PAYMENTS_CARD_PROFILES):
        profile = decode_profile(message.value())
        assert message.key() == profile.card_id.encode()
        on_topic[profile.card_id] = profile  # the latest per card, as compaction keeps
    assert sorted(on_topic) == [row[0] for row in oracle]
    for card, count, home, mean, std, hours, mccs, last in oracle:
        got = on_topic[card]
        assert (got.txn_count, got.home_country, got.usual_mccs) == (count, home, mccs), card
        assert got.usual_hours == hours, card
        assert got.amount_mean == pytest.approx(mean, rel=1e-9), card
        assert got.amount_std == pytest.approx(std, rel=1e-9), card
        assert datetime.fromisoformat(got.last_event_time) == last.astimezone(UTC), card
        assert got.window_days == 30

    # The topic keeps the latest profile per key.
    resource = ConfigResource("topic", PAYMENTS_CARD_PROFILES)
    admin = admin_client(settings)  # kept: the futures need their client alive
    (configs,) = admin.describe_configs([resource]).values()
    assert configs.result(30)["cleanup.policy"].value == "compact"
