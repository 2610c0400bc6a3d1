"""Flows deployed by Dagster: deploy, survive, die, get redeployed, stop on purpose."""

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from flows.kit import runner
from flows.kit.status import read_status
from orchestration.definitions import defs
from orchestration.defs.flows.assets import flow_assets
from orchestration.defs.flows.sensors import flow_liveness
from orchestration.lib import flows
from orchestration.lib.settings import RiverbedResource
from riverbed import processes
from riverbed.settings import Settings
from tests.support.env import use_settings
from tests.support.flow_harness import generate, produce, start_flow, stop_flow, wait_until

pytestmark = pytest.mark.kafka


@pytest.fixture
def flow_settings(kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    use_settings(monkeypatch, kafka_settings)
    yield kafka_settings
    flows.stop(kafka_settings, "payments")


def deploy(settings: Settings) -> dict:
    """Deploy the payments flow (the IoT flow is deployed the same way, by its own asset)."""
    result = dg.materialize(
        flow_assets,
        selection=[dg.AssetKey(["flows", "payments"])],
        resources={"riverbed": RiverbedResource()},
    )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def wait_alive(settings: Settings, seconds: float = 20) -> processes.Deployment:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        deployment = processes.read_deployment(flows.deployment_dir(settings, "payments"))
        if processes.is_alive(deployment) and deployment is not None:
            return deployment
        time.sleep(0.2)
    raise AssertionError("the flow is not running")


def test_a_killed_flow_is_redeployed_by_the_liveness_sensor(flow_settings: Settings) -> None:
    first = deploy(flow_settings)
    assert first["action"] == "started"
    pid = wait_alive(flow_settings).pid
    assert deploy(flow_settings)["action"] == "unchanged"  # same code, same settings

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while processes.is_alive(
        processes.read_deployment(flows.deployment_dir(flow_settings, "payments"))
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)

    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(
        instance=instance, resources={"riverbed": RiverbedResource()}, definitions=defs()
    )
    requests = flow_liveness(context)
    assert isinstance(requests, list) and len(requests) == 1
    assert requests[0].asset_selection == [dg.AssetKey(["flows", "payments"])]
    # Run what the sensor asked for, as the daemon would.
    redeployed = deploy(flow_settings)
    assert redeployed["action"] == "started"
    assert wait_alive(flow_settings).pid != pid


def test_stop_flow_job_stops_it_and_liveness_leaves_it_down(flow_settings: Settings) -> None:
    deploy(flow_settings)
    wait_alive(flow_settings)
    result = (
        defs()
        .resolve_job_def("stop_flow")
        .execute_in_process(resources={"riverbed": RiverbedResource()})
    )
    assert result.success
    assert not processes.is_alive(
        processes.read_deployment(flows.deployment_dir(flow_settings, "payments"))
    )
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        resources={"riverbed": RiverbedResource()},
        definitions=defs(),
    )
    assert isinstance(flow_liveness(context), dg.SkipReason)


def test_a_settings_change_restarts_the_flow(
    flow_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy(flow_settings)
    before = wait_alive(flow_settings)
    monkeypatch.setenv("RIVERBED_FLUSH_INTERVAL_S", "3")
    after = deploy(flow_settings)
    assert after["action"] == "restarted"
    assert after["version"] != before.version
    assert wait_alive(flow_settings).pid != before.pid


def test_a_fenced_flow_is_marked_and_liveness_leaves_it_down(
    flow_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of the flow elsewhere (its own RIVERBED_HOME, the same cluster and lake)
    takes the partitions over: the deployed flow exits fenced, `riverbed flow run` marks
    it, and the liveness sensor leaves it down instead of fencing the other copy back."""
    monkeypatch.setenv("RIVERBED_FLUSH_INTERVAL_S", "1")
    settings = flow_settings.model_copy(update={"flush_interval_s": 1.0})
    deployed = flows.deployment_dir(settings, "payments")
    other = settings.model_copy(update={"home": settings.home / "other"})
    other.home.mkdir(parents=True)
    settings.lake_dir.mkdir(parents=True, exist_ok=True)
    other.lake_dir.symlink_to(settings.lake_dir)
    events = generate(4_000, seed=31)
    deploy(settings)
    deployment = wait_alive(settings)
    log = Path(deployment.log_path)
    other_log = other.home / "flow.log"
    copy = []
    try:
        produce(settings, events[:2_000])
        wait_until(lambda: bool(read_status(deployed)), 60, "a flush", [], log)
        copy = start_flow(other, other_log, recovery=False)
        wait_until(
            lambda: bool(read_status(runner.flow_dir(other, "payments"))),
            120,
            "the other copy's flush",
            copy,
            other_log,
        )
        produce(settings, events[2_000:])
        wait_until(lambda: not processes.is_alive(deployment), 60, "the fenced exit", [], log)
    finally:
        stop_flow(copy)
    assert "fenced, stopping: " in log.read_text()
    assert "another copy of the flow took its partitions over" in log.read_text()
    assert "another copy took its partitions over" in (flows.fenced(settings, "payments") or "")
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        resources={"riverbed": RiverbedResource()},
        definitions=defs(),
    )
    skipped = flow_liveness(context)
    assert isinstance(skipped, dg.SkipReason), skipped
    assert "payments: not redeployed, it was fenced" in (skipped.skip_message or "")
    # Deployed on purpose again, it starts, and the mark is gone.
    assert deploy(settings)["action"] == "started"
    assert flows.fenced(settings, "payments") is None
