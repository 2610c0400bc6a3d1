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
