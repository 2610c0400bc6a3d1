"""Flows as assets: materializing one deploys the Bytewax flow as a process of its own."""

import time
from itertools import pairwise

import dagster as dg
from confluent_kafka import KafkaException

from orchestration.lib import flows
from orchestration.lib.keys import flow_key, topic_key
from orchestration.lib.settings import RiverbedResource
from riverbed import processes
from riverbed.kafka_admin import consumer_lag
from riverbed.settings import Settings

ALIVE_CHECK = "alive"
LAG_CHECK = "consumer_lag_not_growing"
LAG_SAMPLES = 3
LAG_SAMPLE_INTERVAL_S = 2.0


def _flow_asset(spec: flows.FlowSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=flow_key(spec.domain),
        deps=[topic_key(spec.source_topic), *(topic_key(t) for t in spec.output_topics)],
        group_name="flows",
        kinds={"bytewax", "python"},
        description=(
            f"The `{spec.domain}` Bytewax flow, running as its own process. Materializing "
            "starts it, restarts it if its code or settings changed, or leaves it running."
        ),
        pool="flow_deploy",
    )
    def deploy_flow(
        context: dg.AssetExecutionContext, riverbed: RiverbedResource
    ) -> dg.MaterializeResult:
        settings = riverbed.settings()
        outcome = flows.deploy(settings, spec.domain)
        deployment = outcome.deployment
        context.log.info(f"flow {spec.domain} {outcome.action}: pid {deployment.pid}")
        return dg.MaterializeResult(
            metadata={
                "action": outcome.action,
                "pid": deployment.pid,
                "version": deployment.version,
                "started_at": dg.MetadataValue.timestamp(deployment.started_at),
                "recovery_store": str(flows.deployment_dir(settings, spec.domain) / "recovery"),
                "log": dg.MetadataValue.path(deployment.log_path),
                "command": " ".join(deployment.argv[1:]),
            }
        )

    return deploy_flow


def _alive_check(spec: flows.FlowSpec) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=flow_key(spec.domain), name=ALIVE_CHECK, blocking=False)
    def alive(riverbed: RiverbedResource) -> dg.AssetCheckResult:
        settings = riverbed.settings()
        directory = flows.deployment_dir(settings, spec.domain)
        deployment = processes.read_deployment(directory)
        if processes.is_alive(deployment) and deployment is not None:
            return dg.AssetCheckResult(passed=True, metadata={"pid": deployment.pid})
        if flows.stopped_on_purpose(settings, spec.domain):
            why = "stopped on purpose (the stop_flow job); materialize the flow to start it"
        elif (fenced := flows.fenced(settings, spec.domain)) is not None:
            why = (
                f"fenced ({fenced}); the flow_liveness sensor leaves it down: {flows.FENCED_ADVICE}"
            )
        elif deployment is None:
            why = "never deployed; materialize the flow asset"
        else:
            why = (
                f"process {deployment.pid} is gone; the flow_liveness sensor redeploys it "
                f"(up to {settings.flow_restart_limit} times). Last log lines:\n"
                + processes.tail(deployment.log_path, 10)
            )
        return dg.AssetCheckResult(passed=False, description=why)

    return alive


def lag_samples(
    settings: Settings, spec: flows.FlowSpec, samples: int, interval: float
) -> list[int]:
    """Total lag of the flow's consumer group, sampled ``samples`` times ``interval`` apart."""
    totals = []
    for i in range(samples):
        if i:
            time.sleep(interval)
        totals.append(
            sum(consumer_lag(settings, settings.consumer_group, spec.source_topic).values())
        )
    return totals


def lag_keeps_growing(totals: list[int], threshold: int) -> bool:
    """Growing at every sample and above the threshold at the end: the flow falls behind."""
    growing = all(b > a for a, b in pairwise(totals))
    return len(totals) > 1 and growing and totals[-1] > threshold


def _lag_check(spec: flows.FlowSpec) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=flow_key(spec.domain), name=LAG_CHECK, blocking=False)
    def lag_not_growing(riverbed: RiverbedResource) -> dg.AssetCheckResult:
        settings = riverbed.settings()
        try:
            totals = lag_samples(settings, spec, LAG_SAMPLES, LAG_SAMPLE_INTERVAL_S)
        except KafkaException as exc:
            # Not a verdict on the flow: say so (a warning), and never fail the run that
            # deployed it (make run stops when a deploy fails).
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"could not read consumer group {settings.consumer_group}'s lag "
                f"on {spec.source_topic} ({exc}); the next check tries again",
            )
        growing = lag_keeps_growing(totals, settings.lag_threshold)
        return dg.AssetCheckResult(
            passed=not growing,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "lag_samples": dg.MetadataValue.json(totals),
                "threshold": settings.lag_threshold,
            },
            description=(
                f"consumer group {settings.consumer_group} lag grew {totals} past "
                f"{settings.lag_threshold}: the flow is not keeping up or not running"
                if growing
                else f"lag {totals[-1]} (samples {totals})"
            ),
        )

    return lag_not_growing


flow_assets = [_flow_asset(spec) for spec in flows.FLOWS.values()]
flow_checks = [
    check for spec in flows.FLOWS.values() for check in (_alive_check(spec), _lag_check(spec))
]


@dg.op(config_schema={"domain": dg.Field(str, default_value="payments")})
def stop_flow_op(context: dg.OpExecutionContext, riverbed: RiverbedResource) -> None:
    domain = context.op_config["domain"]
    was_running = flows.stop(riverbed.settings(), domain)
    context.log.info(f"flow {domain}: {'stopped' if was_running else 'was not running'}")


@dg.job(description="Stop a deployed flow cleanly; the liveness sensor leaves it down.")
def stop_flow() -> None:
    stop_flow_op()


flow_health_checks = dg.define_asset_job(
    "flow_health_checks",
    selection=dg.AssetSelection.checks(*flow_checks),
    description="Runs every flow's liveness and consumer-lag checks.",
)

defs = dg.Definitions(
    assets=flow_assets, asset_checks=flow_checks, jobs=[stop_flow, flow_health_checks]
)
