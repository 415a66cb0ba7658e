"""Prometheus metrics of one app instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2.5, 5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("racewire_http_requests", "HTTP requests by route template and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("racewire_http_request_seconds", "time to the response start, by route",
                                 ["route"], registry=r,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.sse_clients = Gauge("racewire_sse_clients", "connected SSE clients", registry=r)
        self.sse_connections = Counter("racewire_sse_connections", "SSE connections opened", registry=r)
        self.sse_channels = Gauge("racewire_sse_channels", "races with a live Redis reader in this process",
                                  registry=r)
        self.sse_messages = Counter("racewire_sse_messages", "messages fanned out, by kind", ["kind"], registry=r)
        self.sse_deliveries = Counter("racewire_sse_deliveries", "messages queued to clients (message x client)",
                                      registry=r)
        self.sse_overflows = Counter("racewire_sse_overflows",
                                     "client queues that overflowed (the client was resynchronised)", registry=r)
        self.sse_resyncs = Counter("racewire_sse_resyncs", "resynchronisations of slow clients from Redis",
                                   registry=r)
        self.sse_lag = Histogram("racewire_sse_fanout_lag_seconds",
                                 "time from the channel reading a message to a client's stream taking it",
                                 registry=r, buckets=LAG_BUCKETS)
        self.rate_limited = Counter("racewire_rate_limited", "requests refused by the rate limiter", registry=r)
        self.ingested = Counter("racewire_ingested_records", "records produced through POST /api/events",
                                ["topic"], registry=r)
        self.ingest_rejected = Counter("racewire_ingest_rejected", "records refused by validation", registry=r)

    def on_broadcast(self, msg: Any, receivers: int, dropped: int) -> None:
        self.sse_messages.labels(msg.kind).inc()
        self.sse_deliveries.inc(receivers - dropped)
        if dropped:
            self.sse_overflows.inc(dropped)


class MetricsMiddleware:
    """Pure ASGI middleware (it does not buffer streaming responses): counts requests by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        recorded = False

        async def wrapped(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                path = route_template(scope)
                self.metrics.requests.labels(scope["method"], path, str(message["status"])).inc()
                self.metrics.latency.labels(path).observe(time.perf_counter() - start)
            await send(message)

        await self.app(scope, receive, wrapped)


def route_template(scope: Scope) -> str:
    """The matched route's full template (``/api/races/{race_id}/leaderboard``); ``static`` otherwise, so
    label values stay few whatever paths clients ask for."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not template or not isinstance(template, str):
        return "static"
    # routers included with a prefix report only their own part: take the prefix from the request path
    n = template.count("/")
    parts = scope.get("path", "").split("/")
    prefix = "/".join(parts[: len(parts) - n]) if len(parts) > n else ""
    return prefix + template
