"""The live dashboard: a Dash app that redraws itself from one snapshot every 2 seconds.

Dash (Plotly) because it is maintained, it is Python end to end, and its JavaScript
(React, Plotly.js) ships inside its Python packages and is served from them: the page
fetches nothing from a CDN, which a platform that runs on a laptop or behind a
firewall needs. The page polls the server (``dcc.Interval``); each tick reads a
:class:`dashboard.data.Snapshot` and redraws every panel from it.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import flask
import plotly.graph_objects as go
from dash import Dash, Input, Output, dcc, html

from dashboard.data import Snapshot, read_snapshot
from riverbed.settings import Settings

REFRESH_MS = 2000
REUSE_S = 1.0  # a snapshot this fresh is shown again rather than read again


def create_app(settings: Settings) -> Dash:
    app = Dash(__name__, title="Riverbed", update_title=None, serve_locally=True)
    snapshots = _Snapshots(settings)

    def layout() -> html.Div:
        # A function: every page load starts from a fresh snapshot, then the tick redraws.
        # ?refresh=0 draws it once and stops (a printout; headless browsers in tests).
        still = flask.has_request_context() and flask.request.args.get("refresh") == "0"
        return html.Div(
            [
                html.H1("Riverbed"),
                html.Div(id="content", children=render(snapshots.latest())),
                dcc.Interval(id="tick", interval=REFRESH_MS, max_intervals=0 if still else -1),
            ],
            style={"fontFamily": "sans-serif", "margin": "1em"},
        )

    app.layout = layout

    @app.callback(Output("content", "children"), Input("tick", "n_intervals"))
    def refresh(_: int | None) -> list[Any]:
        return render(snapshots.latest())

    return app


class _Snapshots:
    """One snapshot at a time for every page and tick the server handles: a page load
    and its first tick, or several open pages, share a read of the lake and Prometheus
    instead of running them side by side on a busy machine.

    A request that waited for a read under way takes its result (it finished after the
    request came) rather than reading again: on a loaded machine a read takes seconds,
    and a page load behind an open page's tick otherwise waited for two."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._last: Snapshot | None = None
        self._finished_at = 0.0

    def latest(self) -> Snapshot:
        asked_at = time.time()
        with self._lock:
            if self._last is None or asked_at - self._finished_at > REUSE_S:
                self._last = read_snapshot(self._settings)
                self._finished_at = time.time()
            return self._last


def render(snap: Snapshot) -> list[Any]:
    return [
        html.P(
            f"updated {dt.datetime.fromtimestamp(snap.taken_at):%H:%M:%S}",
            id="updated",
            **{"data-taken-at": f"{snap.taken_at:.3f}"},
        ),
        *([html.P("; ".join(snap.problems), className="problems")] if snap.problems else []),
        html.Div(
            [
                _stat("events in / s", _num(snap.events_in_per_s, 1), "events-in"),
                _stat("into the lake / s", _num(snap.events_out_per_s, 1), "events-out"),
                _stat("transactions in the lake", _num(snap.transactions), "transactions"),
                _stat("alerts", _num(_total(snap.alerts_by_rule)), "alerts"),
                _stat("send → lake p50", _seconds(snap.latency_p50_s), "latency-p50"),
                _stat("send → lake p99", _seconds(snap.latency_p99_s), "latency-p99"),
                _stat("send → alert p99", _seconds(snap.alert_latency_p99_s), "alert-latency-p99"),
                _stat("warehouse age", _seconds(snap.warehouse_age_s), "warehouse-age"),
                _stat("under-replicated", _num(snap.under_replicated), "under-replicated"),
            ],
            style={"display": "flex", "flexWrap": "wrap", "gap": "1em"},
        ),
        html.Div(
            [
                _graph("alerts by rule", snap.alerts_by_rule),
                _graph("consumer lag per partition", snap.lag_by_partition),
                _graph(
                    "alerted share by country",
                    _shares(snap.fraud_by_country, "country"),
                    percent=True,
                ),
                _graph(
                    "alerted share by merchant category",
                    _shares(snap.fraud_by_mcc, "mcc"),
                    percent=True,
                ),
            ],
            style={"display": "grid", "gridTemplateColumns": "1fr 1fr", "gap": "1em"},
        ),
        html.H2("alerts by rule"),
        _table(
            "alerts-by-rule",
            [{"rule": r, "alerts": n} for r, n in (snap.alerts_by_rule or {}).items()],
        ),
        html.H2("newest alerts"),
        _table("newest-alerts", snap.newest_alerts or []),
        html.H2("busiest merchants, last 15 minutes of windows"),
        _table("busiest-merchants", snap.busiest_merchants or []),
        *_iot(snap),
        html.H2("health"),
        html.H3("Kafka nodes"),
        _table("brokers", snap.brokers or []),
        html.H3("flow processes"),
        _table("flows", snap.flows_up or []),
        html.H3("firing alerts"),
        _table("firing", [_alert(a) for a in snap.firing or []]),
    ]


def _iot(snap: Snapshot) -> list[Any]:
    """The IoT section, once an IoT flow has written readings."""
    if snap.readings is None:
        return []
    return [
        html.H2("IoT sensors"),
        html.Div(
            [
                _stat("readings in the lake", _num(snap.readings), "readings"),
                _stat("anomalies", _num(_total(snap.anomalies_by_rule)), "anomalies"),
                _stat(
                    "rooms occupied",
                    _num(sum(1 for r in snap.rooms or [] if r["occupied"])),
                    "rooms-occupied",
                ),
            ],
            style={"display": "flex", "flexWrap": "wrap", "gap": "1em"},
        ),
        _graph("anomalies by rule", snap.anomalies_by_rule),
        html.H3("rooms, latest state (CO2 joined with light and humidity)"),
        _table("rooms", snap.rooms or []),
        html.H3("newest anomalies"),
        _table("newest-anomalies", snap.newest_anomalies or []),
    ]


def _stat(label: str, value: str, key: str) -> html.Div:
    return html.Div(
        [html.Div(value, id=f"stat-{key}", style={"fontSize": "2em"}), html.Div(label)],
        style={"border": "1px solid #ccc", "borderRadius": "6px", "padding": "0.5em 1em"},
    )


def _graph(title: str, values: dict[str, float] | None, *, percent: bool = False) -> dcc.Graph:
    values = values or {}
    figure = go.Figure(go.Bar(x=list(values), y=list(values.values())))
    figure.update_layout(
        title=title, height=280, margin={"l": 40, "r": 10, "t": 40, "b": 40}, template="none"
    )
    if percent:
        figure.update_yaxes(tickformat=".1%")
    figure.update_xaxes(type="category")
    return dcc.Graph(figure=figure, config={"displayModeBar": False})


def _table(key: str, rows: list[dict[str, Any]]) -> html.Table:
    if not rows:
        return html.Table([html.Tr(html.Td("none"))], id=key)
    header = html.Tr([html.Th(name) for name in rows[0]])
    body = [html.Tr([html.Td(_cell(v)) for v in row.values()]) for row in rows]
    return html.Table([header, *body], id=key)


def _alert(labels: dict[str, str]) -> dict[str, str]:
    return {"alert": labels.get("alertname", "?"), "severity": labels.get("severity", "")}


def _shares(rows: list[dict[str, Any]] | None, key: str) -> dict[str, float]:
    return {str(r[key]): float(r["share"]) for r in rows or []}


def _total(counts: dict[str, int] | None) -> int | None:
    return None if counts is None else sum(counts.values())


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _cell(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, float):
        return f"{value:,.4f}"
    return str(value)
