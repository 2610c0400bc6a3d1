"""The decisions inside the health sensors, without services."""

from itertools import pairwise

from orchestration.defs.flows.assets import lag_keeps_growing
from orchestration.defs.flows.sensors import next_liveness_state
from orchestration.defs.lake.sensors import LakeCursor, pending_since, plan_lake_tick
from riverbed.lake import TableSummary


def test_liveness_backs_off_then_gives_up() -> None:
    state: dict = {}
    now = 1000.0
    attempts = []
    for _ in range(200):
        state, redeploy = next_liveness_state(state, False, now, limit=3, backoff_s=10)
        if redeploy:
            attempts.append(now)
        now += 1
    assert len(attempts) == 3
    assert [b - a for a, b in pairwise(attempts)] == [10, 20]
    assert state["gave_up"] is True


def test_liveness_resets_once_alive() -> None:
    state, _ = next_liveness_state({}, False, 0.0, limit=3, backoff_s=10)
    state, redeploy = next_liveness_state(state, True, 5.0, limit=3, backoff_s=10)
    assert state["failures"] == 0 and not redeploy


def test_lag_growing_past_threshold() -> None:
    assert lag_keeps_growing([10, 20, 30], threshold=25)
    assert not lag_keeps_growing([10, 20, 30], threshold=30)
    assert not lag_keeps_growing([10, 30, 20], threshold=0)
    assert not lag_keeps_growing([30], threshold=0)


def test_freshness_pending_since() -> None:
    assert pending_since(None, topic_grew=False, last_commit=None, now=10) is None
    assert pending_since(None, topic_grew=True, last_commit=None, now=10) == 10
    assert pending_since(10, topic_grew=True, last_commit=5, now=20) == 10
    assert pending_since(10, topic_grew=False, last_commit=12, now=20) is None


def table(version: int, files: int = 1, rows: int = 10) -> TableSummary:
    return TableSummary(version=version, files=files, rows=rows, last_commit_at=100.0)


def test_lake_tick_records_new_versions_and_asks_for_a_build() -> None:
    tick = plan_lake_tick(
        LakeCursor({"payments/transactions": 3}),
        {"payments/transactions": table(5), "payments/alerts": table(0), "payments/mm": None},
        build_in_flight=False,
    )
    assert set(tick.changed) == {"payments/transactions", "payments/alerts"}
    assert tick.request_build
    assert tick.cursor == LakeCursor({"payments/transactions": 5, "payments/alerts": 0})


def test_lake_tick_without_new_versions_asks_for_nothing() -> None:
    cursor = LakeCursor({"payments/transactions": 5})
    tick = plan_lake_tick(cursor, {"payments/transactions": table(5)}, build_in_flight=False)
    assert tick.changed == {} and not tick.request_build and tick.cursor == cursor


def test_lake_tick_coalesces_while_a_build_is_in_flight() -> None:
    tables = {"payments/transactions": table(5)}
    busy = plan_lake_tick(LakeCursor(), tables, build_in_flight=True)
    # Recorded once, but the build is owed, not requested.
    assert set(busy.changed) == {"payments/transactions"}
    assert not busy.request_build and busy.cursor.build_pending
    # More commits while the build still runs: still owed, still one.
    tables = {"payments/transactions": table(7)}
    still = plan_lake_tick(busy.cursor, tables, build_in_flight=True)
    assert not still.request_build and still.cursor.build_pending
    # The build finished: the next tick asks, with nothing new to record.
    done = plan_lake_tick(still.cursor, tables, build_in_flight=False)
    assert done.changed == {} and done.request_build and not done.cursor.build_pending


def test_lake_cursor_round_trips_and_drops_the_file_count_cursor() -> None:
    cursor = LakeCursor({"payments/transactions": 4}, build_pending=True)
    assert LakeCursor.parse(cursor.dump()) == cursor
    assert LakeCursor.parse(None) == LakeCursor()
    assert LakeCursor.parse('{"payments/transactions": 12}') == LakeCursor()
