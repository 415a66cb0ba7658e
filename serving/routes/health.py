"""Health (each dependency) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import HubDep, MetricsDep, RedisDep, SettingsDep
from serving.models import HealthOut

router = APIRouter(tags=["ops"])
metrics_router = APIRouter(tags=["ops"])

KAFKA_CHECK_TTL_S = 5.0
CHECK_TIMEOUT_S = 2.0


async def _redis_health(client: Any) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(client.ping(), CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure means "down"; the message says why
        return {"ok": False, "configured": True, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "configured": True, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}


def _kafka_check(bootstrap: str) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient

    start = time.perf_counter()
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000})
    md = admin.list_topics(timeout=CHECK_TIMEOUT_S)
    return {"ok": True, "configured": True, "brokers": len(md.brokers), "topics": len(md.topics),
            "latency_ms": round((time.perf_counter() - start) * 1000, 1)}


async def _kafka_health(request: Request, bootstrap: str | None) -> dict[str, Any]:
    if not bootstrap:
        return {"ok": None, "configured": False}
    cached = request.app.state.kafka_health
    now = time.monotonic()
    if cached is not None and now - cached[0] < KAFKA_CHECK_TTL_S:
        result: dict[str, Any] = cached[1]
        return result
    try:
        result = await asyncio.wait_for(asyncio.to_thread(_kafka_check, bootstrap), CHECK_TIMEOUT_S + 1)
    except Exception as exc:  # KafkaException, timeouts, ...
        result = {"ok": False, "configured": True, "error": f"{type(exc).__name__}: {exc}"}
    request.app.state.kafka_health = (now, result)
    return result


@router.get("/health", response_model=HealthOut, summary="Each dependency's state",
            responses={503: {"description": "Redis (required) is down"}})
async def health(request: Request, client: RedisDep, settings: SettingsDep, hub: HubDep) -> JSONResponse:
    redis_state, kafka_state = await asyncio.gather(_redis_health(client),
                                                    _kafka_health(request, settings.kafka_bootstrap))
    deps = {"redis": redis_state, "kafka": kafka_state,
            "schema_registry": {"ok": None, "configured": bool(settings.schema_registry_url)}}
    down = [name for name, d in deps.items() if d.get("configured") and d.get("ok") is False]
    body = {"status": "ok" if not down else "degraded", "dependencies": deps,
            "sse_clients": hub.clients, "sse_channels": len(hub.channels)}
    return JSONResponse(body, status_code=503 if "redis" in down else 200)


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(metrics: MetricsDep, hub: HubDep) -> Response:
    metrics.sse_channels.set(len(hub.channels))
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
