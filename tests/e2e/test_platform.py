"""The whole platform, headless: `python -m orchestration.platform` as `make run` starts it.

The platform runs against the test session's broker, with Dagster's web UI and
daemon on a free port. The test publishes 20,000 transactions and 3,000 sensor
readings itself, then waits (bounded) until the warehouse marts of both domains
hold them, and asks Dagster, through its GraphQL API, whether the assets
materialized and their checks passed. Other tests open the UI's asset graph and
the dashboard in headless Chromium.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from orchestration.lib import flows
from orchestration.lib.webserver import graphql
from orchestration.platform import children_dir as platform_children_dir
from producers.iot import produce_iot
from producers.payments import produce_payments
from riverbed import lake, processes, prometheus
from riverbed.broker import LocalCluster
from riverbed.kafka_admin import recreate_topics
from riverbed.settings import Settings, load_settings
from tests.conftest import REPO, SHARED_TEST_HOME
from tests.support.browser import Page
from tests.support.env import free_port
from tests.support.flow_harness import generate, produce
from tests.support.monitoring import grafana_metrics, query

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
EVENTS = 20_000
# Enough that fraud patterns complete at any hour of the day (the generator's mix of
# cities follows the UTC hour): 3,000 raised none at some hours.
FRAUD_EVENTS = 20_000
READINGS = 3_000
WAIT_S = 420
# Screenshots and pages of the end-to-end run, kept after it.
ARTIFACTS = SHARED_TEST_HOME / "artifacts"
# The platform process and its log, by home: the last test stops it itself.
RUNNING: dict[Path, tuple[subprocess.Popen[bytes], Path]] = {}


@pytest.fixture(scope="module")
def platform(
    broker_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    recreate_topics(broker_settings)
    home = tmp_path_factory.mktemp("platform") / "riverbed"
    settings = load_settings(
        kafka_bootstrap=broker_settings.bootstrap_servers,
        home=home,
        dagster_port=free_port(),
        prometheus_port=free_port(),
        dashboard_port=free_port(),
        flush_interval_s=2.0,
        snapshot_interval_s=2,
        # A group of its own: a group an earlier, interrupted run left with a transaction
        # open cannot be deleted yet, and its offsets would make this flow skip outputs.
        consumer_group=f"riverbed.payments.e2e-{uuid.uuid4().hex[:8]}",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERBED_")}
    env.update(settings.to_env())
    home.mkdir(parents=True)
    log = open(home.parent / "platform.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestration.platform", "--no-producer"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    RUNNING[home] = (process, home.parent / "platform.log")
    try:
        wait_until_deployed(settings, process, home.parent / "platform.log")
        if broker_settings.manages_local_broker:
            # The session's broker is not the platform's own (it names it as external),
            # so its Prometheus is told of the broker's metrics as of any other target.
            node = LocalCluster(broker_settings).nodes[0]
            prometheus.register_target(settings, "kafka", "session", node.metrics_port)
        yield settings
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def wait_until_deployed(settings: Settings, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the platform exited early:\n{log.read_text()[-4000:]}")
        if "press Ctrl-C" in log.read_text():
            return
        time.sleep(1)
    pytest.fail(f"the platform did not come up within 240 s:\n{log.read_text()[-4000:]}")


def warehouse_count(settings: Settings, table: str, what: str = "count(*)") -> int | None:
    """``what`` (rows) of a mart of the read copy each build publishes (what the README
    tells people to query), or None before the first build published it."""
    try:
        with duckdb.connect(str(settings.warehouse_read_path), read_only=True) as con:
            found = con.execute(f"select {what} from {table}").fetchone()[0]  # type: ignore[index]
            return None if found is None else int(found)
    except duckdb.Error:
        return None


# The platform's start (up to 240 s, on the first test) and this test's own bounded
# waits (420 s for the marts, 180 s for the checks) decide when it fails, not the
# suite's 600 s per test: a slow machine gets the same budget for each step.
@pytest.mark.timeout(240 + 60 + WAIT_S + 180)
def test_events_reach_the_marts_and_dagster_reports_them(platform: Settings) -> None:
    # serve_metrics: the platform's Prometheus sees the producer as `riverbed produce` is
    # seen. At a rate (20 s), not all at once, so that Prometheus scrapes it a few times.
    summary = produce_payments(
        platform, rate=1000, count=EVENTS, duration=None, seed=11, serve_metrics=True
    )
    assert summary.ok and summary.sent == EVENTS
    # Live events span too little event time for a fraud pattern to complete; these
    # (event times spread over the past ~4 minutes) raise alerts.
    produce(platform, generate(FRAUD_EVENTS, seed=12))
    # The IoT flow Dagster deployed beside it: four rooms' recent past, all at once.
    readings = produce_iot(platform, rate=0, count=READINGS, duration=None, seed=13, rooms=4)
    assert readings.ok and readings.sent == READINGS

    deadline = time.monotonic() + WAIT_S
    rows = None
    while time.monotonic() < deadline:
        rows = warehouse_count(platform, "main.fct_transactions")
        if rows is not None and rows >= expected_valid(platform):
            break
        time.sleep(1)
    assert rows == expected_valid(platform), f"fct_transactions holds {rows} rows"
    while time.monotonic() < deadline:
        stored = warehouse_count(platform, "main.fct_iot__device_hourly", "sum(reading_count)")
        if stored is not None and stored >= expected_readings(platform):
            break
        time.sleep(1)
    assert stored == expected_readings(platform), f"fct_iot__device_hourly counts {stored}"

    # Builds keep coming (the lake sensor asks for one after every new lake version, the
    # schedule every few minutes) and on a busy machine one may always be running: judge
    # each check by its latest *finished* execution, waiting (bounded) for one to exist.
    nodes = asset_nodes(platform)
    checks = [
        (key, check["name"])
        for key, node in nodes.items()
        if key.startswith("warehouse/")
        for check in node["assetChecksOrError"].get("checks", [])
    ]
    deadline = time.monotonic() + 180
    while True:
        statuses = finished_check_statuses(platform, checks)
        if None not in statuses.values() or time.monotonic() > deadline:
            break
        time.sleep(2)
    for key in (
        "kafka/payments_transactions",
        "flows/payments",
        "lake/payments/transactions",
        "warehouse/fct_transactions",
        "warehouse/fct_fraud_alerts",
        "flows/iot",
        "lake/iot/readings",
        "warehouse/fct_iot__device_hourly",
    ):
        assert nodes[key]["assetMaterializations"], f"{key} never materialized"
    assert len(statuses) > 20
    assert {k: v for k, v in statuses.items() if v != "SUCCEEDED"} == {}


def asset_nodes(settings: Settings) -> dict[str, dict]:
    data = graphql(
        settings,
        """
        {
          assetNodes {
            assetKey { path }
            assetMaterializations(limit: 1) { runId }
            assetChecksOrError {
              ... on AssetChecks { checks { name executionForLatestMaterialization { status } } }
            }
          }
        }
        """,
    )
    return {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}


def finished_check_statuses(
    settings: Settings, checks: list[tuple[str, str]]
) -> dict[str, str | None]:
    """Each check's status in its latest execution that is no longer in progress (None
    if it has none yet), by ``asset:check``: one GraphQL query, a field per check."""
    fields = "\n".join(
        f"c{i}: assetCheckExecutions(assetKey: {{path: {json.dumps(key.split('/'))}}}, "
        f"checkName: {json.dumps(name)}, limit: 5) {{ status }}"
        for i, (key, name) in enumerate(checks)
    )
    data = graphql(settings, f"{{ {fields} }}")
    return {
        f"{key}:{name}": next(
            (e["status"] for e in data[f"c{i}"] if e["status"] != "IN_PROGRESS"), None
        )
        for i, (key, name) in enumerate(checks)
    }


_expected: dict[str, int] = {}


def expected_readings(settings: Settings) -> int:
    """Distinct valid readings among those produced, read back from Kafka and judged by
    the contract at their Kafka timestamps (as the flow judges them)."""
    if "readings" not in _expected:
        from datetime import UTC, datetime

        from riverbed.contracts.iot import InvalidEvent, decode_reading
        from riverbed.topics import IOT_READINGS
        from tests.support.flow_harness import read_topic

        ids = set()
        for message in read_topic(settings, IOT_READINGS):
            now = datetime.fromtimestamp(message.timestamp()[1] / 1000, UTC)
            try:
                ids.add(decode_reading(message.value(), now)[0].reading_id)
            except InvalidEvent:
                continue
        _expected["readings"] = len(ids)
    return _expected["readings"]


def expected_valid(settings: Settings) -> int:
    """Distinct valid transactions among the events produced, read back from Kafka."""
    if "n" not in _expected:
        from tests.support.topic_reader import distinct_valid_transactions

        _expected["n"] = distinct_valid_transactions(settings)
    return _expected["n"]


def test_the_ui_shows_the_asset_graph(platform: Settings) -> None:
    """The lineage graph upstream of a mart shows a topic, the flow, a lake dataset, the mart."""
    url = (
        f"http://127.0.0.1:{platform.dagster_port}/assets/warehouse/fct_transactions"
        "?view=lineage&lineageScope=upstream&lineageDepth=6"
    )
    groups = {"kafka", "flows", "lake", "warehouse"}
    nodes = {"payments_alerts", "payments", "transactions", "fct_transactions"}
    # Drawn: every name is the whole text of an element, as the assertion below reads it.
    leaves = (
        "new Set([...document.querySelectorAll('*')]"
        ".filter(e => !e.children.length).map(e => e.textContent.trim()))"
    )
    drawn = f"(names => {json.dumps(sorted(groups | nodes))}.every(n => names.has(n)))({leaves})"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with Page(Path(platform.home) / "chromium-profile", width=1600, height=1000) as page:
        dom = page.open(url, drawn, timeout=90)
        page.screenshot(ARTIFACTS / "dagster-lineage.png")
    # The graph's nodes and group boxes, as rendered text (long names are elided by the UI).
    texts = {t.strip() for t in re.findall(r">([^<>]{2,60})<", dom)}
    assert groups | nodes <= texts, f"missing on the graph at {url}: {(groups | nodes) - texts}"
    # A new instance opens on the graph, not under the "Join the Dagster community" modal.
    assert "Join the Dagster community" not in dom


def test_the_dashboard_shows_what_the_lake_holds(platform: Settings) -> None:
    """After the events test the flow has drained and nothing is produced: the lake holds
    still, and the dashboard must show exactly its counts (one refresh is 2 s)."""
    base = f"http://127.0.0.1:{platform.dashboard_port}"
    # The live page redraws itself every 2 s from the server...
    # (A layout reads the lake and Prometheus: seconds each on a loaded machine.)
    with urllib.request.urlopen(f"{base}/_dash-layout", timeout=60) as answer:
        layout = json.loads(answer.read())
    (tick,) = [c for c in _components(layout) if c.get("props", {}).get("id") == "tick"]
    assert tick["props"]["interval"] <= 2000 and tick["props"]["max_intervals"] == -1
    # ...and drawn once (?refresh=0), it must show what the lake holds now.
    url = f"{base}/?refresh=0"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # Its figures, and its four charts (Plotly draws them after the page's first render).
    drawn = (
        "/\\d/.test(document.getElementById('stat-transactions')?.textContent ?? '')"
        " && document.querySelectorAll('.js-plotly-plot .main-svg').length >= 4"
    )
    with Page(Path(platform.home) / "chromium-dashboard") as page:
        dom = page.open(url, drawn)
        page.screenshot(ARTIFACTS / "dashboard.png")
    (ARTIFACTS / "dashboard.html").write_text(dom)

    con = lake.connect_duckdb()
    try:
        transactions = con.sql(
            f"select count(*) from {lake.scan_sql(platform.lake_dir, 'transactions')}"
        ).fetchone()[0]
        by_rule = dict(
            con.sql(
                f"select rule, count(*) from {lake.scan_sql(platform.lake_dir, 'alerts')} "
                "group by 1"
            ).fetchall()
        )
    finally:
        con.close()
    shown = re.search(r'id="stat-transactions"[^>]*>([\d,]+)<', dom)
    assert shown, f"no transaction count on the dashboard (see {ARTIFACTS / 'dashboard.html'})"
    assert int(shown.group(1).replace(",", "")) == transactions == expected_valid(platform)
    table = re.search(r'<table id="alerts-by-rule">(.*?)</table>', dom, re.S)
    assert table, "no alerts-by-rule table on the dashboard"
    rows = re.findall(r"<tr><td>([^<]+)</td><td>(\d+)</td></tr>", table.group(1))
    assert {rule: int(n) for rule, n in rows} == by_rule
    assert by_rule, "the generated events raise alerts"
    # The IoT section: the lake's readings, as the flow holds them.
    readings = re.search(r'id="stat-readings"[^>]*>([\d,]+)<', dom)
    assert readings, "no IoT section on the dashboard"
    assert int(readings.group(1).replace(",", "")) == expected_readings(platform)


def test_prometheus_has_every_series_the_grafana_dashboard_queries(platform: Settings) -> None:
    """The platform's own Prometheus (started by `make run`) has had, within the run, a
    series of every metric and recorded rule the Grafana dashboard reads."""
    wanted = grafana_metrics()
    assert {"riverbed:flow_events:rate1m", "riverbed_consumer_lag_messages"} <= wanted
    missing = [
        name
        for name in sorted(wanted)
        if not query(platform, f'count(count_over_time({{__name__="{name}"}}[15m]))')
    ]
    assert missing == []


def test_terminal_closed_then_sigterm_while_it_stops_stops_everything(platform: Settings) -> None:
    """SIGHUP (its terminal closed: the children, in sessions of their own, do not hear
    it), then SIGTERM a second later while the flows are stopping (a supervisor following
    up; a second Ctrl-C is the same): the platform still stops every process it started,
    Dagster's included, and the flows Dagster deployed, without a traceback. Runs last:
    it ends the module's platform."""
    process, log = RUNNING.pop(platform.home)
    children = [
        deployment
        for d in platform_children_dir(platform).glob("*/")
        if (deployment := processes.read_deployment(d))
    ]
    flow_leaders = [
        deployment
        for domain in flows.FLOWS
        if (deployment := processes.read_deployment(flows.deployment_dir(platform, domain)))
    ]
    assert len(children) >= 4 and len(flow_leaders) == len(flows.FLOWS), log.read_text()[-3000:]
    # Each child and each flow leads a process group of its own (Dagster's holds its
    # webserver, daemon and code servers).
    deployments = children + flow_leaders

    os.killpg(process.pid, signal.SIGHUP)  # the platform's group: what a terminal reaches
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    assert process.wait(90) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "SIGTERM again" in text, text[-3000:]
    # A build in flight was canceled through Dagster before Dagster stopped, not cut off
    # under way (which Dagster records as a failure).
    dagster_log = (platform.home / "logs" / "dagster.log").read_text()
    assert "interrupted unexpectedly" not in dagster_log, dagster_log[-3000:]

    def left() -> list[str]:
        return [f"{d.name}: {p.pid}" for d in deployments for p in processes.group_members(d)]

    deadline = time.monotonic() + 15
    while left() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left() == [], text[-3000:]


def _components(node: object) -> Iterator[dict]:
    """Every component of a Dash layout (its JSON), depth first."""
    if isinstance(node, dict):
        if "type" in node and "props" in node:
            yield node
            yield from _components(node["props"].get("children"))
    elif isinstance(node, list):
        for child in node:
            yield from _components(child)
