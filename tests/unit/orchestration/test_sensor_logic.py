"""The decisions inside the health sensors, without services."""

from itertools import pairwise

from orchestration.defs.flows.assets import lag_keeps_growing
from orchestration.defs.flows.sensors import next_liveness_state
from orchestration.defs.lake.sensors import pending_since


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
