"""Questions to a running Dagster webserver (the one `make run` starts on 127.0.0.1)."""

from __future__ import annotations

import json
import urllib.request

from riverbed.settings import Settings


class GraphQLError(RuntimeError):
    """The webserver answered a GraphQL query with errors."""


def graphql(settings: Settings, query: str, timeout: float = 30.0) -> dict:
    """The ``data`` of a GraphQL query to the webserver on ``settings.dagster_port``."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{settings.dagster_port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.loads(response.read())
    if "errors" in body:
        raise GraphQLError(f"Dagster GraphQL error: {body['errors']}")
    return body["data"]


#: Run statuses of a run that has not ended yet.
IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def runs_in_flight(settings: Settings, timeout: float = 10.0) -> dict[str, tuple[str, str]]:
    """The runs that have not ended: run id -> (job name, status)."""
    query = (
        "{ runsOrError(filter: {statuses: [" + ", ".join(IN_FLIGHT) + "]}) { __typename"
        " ... on Runs { results { runId jobName status } }"
        " ... on PythonError { message } } }"
    )
    answer = graphql(settings, query, timeout)["runsOrError"]
    if answer["__typename"] != "Runs":
        raise GraphQLError(f"runsOrError answered {answer}")
    return {run["runId"]: (run["jobName"], run["status"]) for run in answer["results"]}


def cancel_run(settings: Settings, run_id: str, status: str, timeout: float = 10.0) -> None:
    """Ask Dagster to end a run, as the UI's Terminate button does.

    A queued or started run is terminated (its process told to stop: it ends
    CANCELED). Dagster cannot terminate a run whose process is still starting
    (NOT_STARTED, STARTING), so such a run is marked canceled, and its process does not
    execute it when it gets there ("Not starting execution since the run was canceled").
    """
    policy = "SAFE_TERMINATE" if status in ("QUEUED", "STARTED") else "MARK_AS_CANCELED_IMMEDIATELY"
    mutation = (
        f'mutation {{ terminateRun(runId: "{run_id}", terminatePolicy: {policy}) {{'
        " __typename ... on TerminateRunFailure { message }"
        " ... on PythonError { message } } }"
    )
    answer = graphql(settings, mutation, timeout)["terminateRun"]
    if answer["__typename"] not in ("TerminateRunSuccess", "RunNotFoundError"):
        raise GraphQLError(f"terminateRun {run_id} answered {answer}")
