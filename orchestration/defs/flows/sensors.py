"""Flow health: liveness (redeploy with backoff) and consumer lag."""

import json
import time

import dagster as dg
from confluent_kafka import KafkaException

from orchestration.defs.flows.assets import LAG_CHECK, lag_keeps_growing
from orchestration.lib import flows
from orchestration.lib.keys import flow_key
from orchestration.lib.settings import RiverbedResource
from riverbed import processes
from riverbed.kafka_admin import consumer_lag

log = dg.get_dagster_logger("riverbed.sensors")


def next_liveness_state(
    state: dict, alive: bool, now: float, limit: int, backoff_s: float
) -> tuple[dict, bool]:
    """(new state, redeploy now?) for one flow: exponential backoff, then give up."""
    if alive:
        return {"failures": 0, "next_attempt": 0.0, "gave_up": False}, False
    failures = int(state.get("failures", 0))
    if failures >= limit:
        return {**state, "gave_up": True}, False
    if now < float(state.get("next_attempt", 0.0)):
        return state, False
    return {
        "failures": failures + 1,
        "next_attempt": now + backoff_s * (2**failures),
        "gave_up": False,
    }, True


@dg.sensor(
    name="flow_liveness",
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    asset_selection=dg.AssetSelection.assets(*(flow_key(d) for d in flows.FLOWS)),
    description="Redeploys a flow whose process died, with backoff, up to a limit.",
)
def flow_liveness(context: dg.SensorEvaluationContext, riverbed: RiverbedResource):
    settings = riverbed.settings()
    cursor = json.loads(context.cursor) if context.cursor else {}
    requests, notes = [], []
    now = time.time()
    for domain in flows.FLOWS:
        directory = flows.deployment_dir(settings, domain)
        deployment = processes.read_deployment(directory)
        if deployment is None or flows.stopped_on_purpose(settings, domain):
            notes.append(f"{domain}: not deployed or stopped on purpose")
            continue
        alive = processes.is_alive(deployment)
        fenced = None if alive else flows.fenced(settings, domain)
        if fenced is not None:
            # Started again, it would fence the copy that took over, and be fenced back.
            notes.append(
                f"{domain}: not redeployed, it was fenced ({fenced}); {flows.FENCED_ADVICE}"
            )
            continue
        state, redeploy = next_liveness_state(
            cursor.get(domain, {}),
            alive,
            now,
            settings.flow_restart_limit,
            settings.flow_restart_backoff_s,
        )
        cursor[domain] = state
        if redeploy:
            log.warning(
                "flow died; redeploying", extra={"flow": domain, "attempt": state["failures"]}
            )
            requests.append(
                dg.RunRequest(
                    run_key=f"{domain}-redeploy-{int(now)}",
                    asset_selection=[flow_key(domain)],
                    tags={
                        "riverbed/reason": "liveness",
                        "riverbed/attempt": str(state["failures"]),
                    },
                )
            )
        elif state.get("gave_up"):
            log.error("flow stays down", extra={"flow": domain, "failures": state["failures"]})
            notes.append(
                f"{domain}: down after {state['failures']} redeploys; fix it, then materialize"
            )
        else:
            notes.append(f"{domain}: {'alive' if alive else 'waiting to redeploy'}")
    context.update_cursor(json.dumps(cursor))
    if requests:
        return requests
    return dg.SkipReason("; ".join(notes) or "no flows")


@dg.sensor(
    name="consumer_lag",
    minimum_interval_seconds=30,
    job_name="flow_health_checks",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Consumer lag per flow (total and worst partition); runs the lag check when "
    "lag has grown three evaluations in a row past RIVERBED_LAG_THRESHOLD.",
)
def consumer_lag_sensor(context: dg.SensorEvaluationContext, riverbed: RiverbedResource):
    settings = riverbed.settings()
    history = json.loads(context.cursor) if context.cursor else {}
    requests, notes = [], []
    for domain, spec in flows.FLOWS.items():
        try:
            lag = consumer_lag(settings, settings.consumer_group, spec.source_topic)
        except KafkaException as exc:
            # The broker's own health sensor reports this; one red sensor is enough.
            return dg.SkipReason(f"Kafka unreachable, lag unknown: {exc.args[0]}")
        total = sum(lag.values())
        worst = max(lag.items(), key=lambda kv: kv[1], default=(None, 0))
        samples = ([*history.get(domain, []), total])[-3:]
        history[domain] = samples
        log.info(
            "consumer lag",
            extra={
                "flow": domain,
                "total": total,
                "worst_partition": worst[0],
                "worst_lag": worst[1],
            },
        )
        notes.append(f"{domain}: lag {total} (worst partition {worst[0]}: {worst[1]})")
        if len(samples) == 3 and lag_keeps_growing(samples, settings.lag_threshold):
            requests.append(
                dg.RunRequest(
                    run_key=f"{domain}-lag-{int(time.time())}",
                    asset_check_keys=[dg.AssetCheckKey(flow_key(domain), LAG_CHECK)],
                )
            )
    context.update_cursor(json.dumps(history))
    return requests or dg.SkipReason("; ".join(notes))


defs = dg.Definitions(sensors=[flow_liveness, consumer_lag_sensor])
