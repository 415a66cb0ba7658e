"""Health: liveness, readiness, each dependency's state; Prometheus metrics.

* ``GET /api/health/live``: the process answers (never looks at Redis or PostgreSQL): the liveness
  probe. Restarting a pod because Redis is down would not bring Redis back.
* ``GET /api/health/ready``: this process can serve reads: Redis answers, *or* PostgreSQL does (the
  live endpoints then answer from it, ``X-Racewire-Source: postgresql``): the readiness probe.
* ``GET /api/health``: every dependency: Redis, PostgreSQL, Kafka, the schema registry, the ingest
  producer and the dataflow (from the flow status documents ``racewire:flow:status:<process>`` that
  each dataflow process refreshes every ~2 s with a 15 s expiry: processes reporting, the age of the
  last applied input, partition lag, per race the records read but not yet applied). ``status`` is
  ``ok`` or ``degraded``; the answer is 503 only when reads cannot be served at all (as ready).
  Anonymous callers get statuses only; operators and admins also get latencies, errors, lag and
  races (which may name internal hosts).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas.redis_layout import FLOW_STATUS_PATTERN
from serving.auth import PrincipalDep, Role
from serving.deps import HubDep, MetricsDep, RedisDep, SettingsDep
from serving.models import HealthOut, ReadyOut

router = APIRouter(tags=["ops"])
metrics_router = APIRouter(tags=["ops"])

KAFKA_CHECK_TTL_S = 5.0
FLOW_CHECK_TTL_S = 2.0
CHECK_TIMEOUT_S = 2.0
#: what anonymous callers see of each dependency
PUBLIC_FIELDS = ("ok", "configured", "processes")


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _redis_health(client: Any) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(client.ping(), CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure means "down"; the message says why
        return {"ok": False, "configured": True, "error": _error(exc)}
    return {"ok": True, "configured": True, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}


async def _postgres_health(request: Request) -> dict[str, Any]:
    from serving.routes.history import get_history_db

    if not request.app.state.settings.database_url:
        return {"ok": None, "configured": False}
    start = time.perf_counter()

    async def probe() -> None:
        async with get_history_db(request).connection() as conn:
            await conn.execute("SELECT 1")

    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT_S)
    except Exception as exc:
        return {"ok": False, "configured": True, "error": _error(exc)}
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
        result = {"ok": False, "configured": True, "error": _error(exc)}
    request.app.state.kafka_health = (now, result)
    return result


def _ingest_health(request: Request) -> dict[str, Any]:
    """The ingest producer of this process (``POST /api/events``): its ``state()`` (connected, spooled
    records and bytes, last error); not ok while it cannot reach the broker (records are spooled) or
    its spool is full (ingest answers 503)."""
    settings = request.app.state.settings
    configured = bool(settings.kafka_bootstrap and settings.schema_registry_url)
    ingest = getattr(request.app.state, "ingest", None)
    if ingest is None:
        return {"ok": None, "configured": configured, "started": False}
    try:
        state = dict(ingest.state())
    except Exception as exc:
        return {"ok": False, "configured": configured, "started": True, "error": _error(exc)}
    full = state.get("spooled_bytes", 0) >= state.get("spool_max_bytes") if state.get("spool_max_bytes") else False
    ok = None if state.get("connected") is None else bool(state.get("connected")) and not full
    return {"configured": configured, "started": True, **state, "ok": ok}


def flow_summary(docs: list[dict[str, Any]], expected: int | None) -> dict[str, Any]:
    """The dataflow's health from its processes' status documents.

    ``expected``: how many processes should report (None: unknown, then any report is good news).

    >>> doc = {"process": 0, "last_applied_age_s": 1.5, "records_read": 5, "records_applied": 4,
    ...        "partitions": {"t/0": {"lag": 3}, "t/1": {"lag": None}},
    ...        "races": {"r": {"read": 5, "applied": 3, "rejected": 1, "last_applied_age_s": 1.5}}}
    >>> s = flow_summary([doc], expected=2)
    >>> s["ok"], s["processes"], s["lag"], s["races"]["r"]["pending"]
    (False, 1, 3, 1)
    """
    races: dict[str, dict[str, Any]] = {}
    lag = 0
    ages = []
    for doc in docs:
        for part in (doc.get("partitions") or {}).values():
            lag += int(part.get("lag") or 0)
        if doc.get("last_applied_age_s") is not None:
            ages.append(float(doc["last_applied_age_s"]))
        for race_id, r in (doc.get("races") or {}).items():
            mine = races.setdefault(race_id, {"read": 0, "applied": 0, "rejected": 0, "duplicate": 0,
                                              "last_applied_age_s": None})
            for k in ("read", "applied", "rejected", "duplicate"):
                mine[k] += int(r.get(k) or 0)
            age = r.get("last_applied_age_s")
            if age is not None and (mine["last_applied_age_s"] is None or age < mine["last_applied_age_s"]):
                mine["last_applied_age_s"] = age
    for r in races.values():
        r["pending"] = max(0, r["read"] - r["applied"] - r["rejected"] - r["duplicate"])
    n = len(docs)
    ok: bool | None = (n >= expected) if expected else (True if n else None)
    return {"ok": ok, "configured": bool(expected), "processes": n, "expected_processes": expected,
            "last_applied_age_s": min(ages) if ages else None, "lag": lag,
            "process_status": sorted(({k: d.get(k) for k in ("process", "pid", "updated_at", "last_applied_age_s",
                                                             "records_read", "records_applied", "partitions")}
                                      for d in docs), key=lambda d: int(d.get("process") or 0)),
            "races": races}


async def _flow_health(request: Request, client: Any) -> dict[str, Any]:
    settings = request.app.state.settings
    # a dataflow is expected where the system has a broker to read from (racewire up, compose, k8s)
    expected = settings.workers if settings.kafka_bootstrap else None
    cached = getattr(request.app.state, "flow_health", None)
    now = time.monotonic()
    if cached is not None and now - cached[0] < FLOW_CHECK_TTL_S:
        result: dict[str, Any] = cached[1]
        return result

    async def read() -> list[dict[str, Any]]:
        keys = [k async for k in client.scan_iter(match=FLOW_STATUS_PATTERN, count=1000)]
        values = await client.mget(keys) if keys else []
        docs = []
        for value in values:
            try:
                doc = orjson.loads(value) if value is not None else None
            except orjson.JSONDecodeError:
                doc = None
            if isinstance(doc, dict):
                docs.append(doc)
        return docs

    try:
        result = flow_summary(await asyncio.wait_for(read(), CHECK_TIMEOUT_S), expected)
    except Exception as exc:  # Redis is down: nothing to read the flow's reports from
        result = {"ok": None if expected is None else False, "configured": expected is not None,
                  "processes": None, "error": f"cannot read the flow status from Redis ({_error(exc)})"}
    request.app.state.flow_health = (now, result)
    return result


def _ready(deps: dict[str, dict[str, Any]]) -> str | None:
    """Where reads are served from now: ``redis``, ``postgresql`` (the fallback), or None."""
    if deps["redis"].get("ok"):
        return "redis"
    if deps["postgresql"].get("ok"):
        return "postgresql"
    return None


@router.get("/health/live", summary="Liveness: the process answers (depends on nothing else)")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/health/ready", response_model=ReadyOut, summary="Readiness: reads can be served (Redis or PostgreSQL)",
            responses={503: {"description": "neither Redis nor PostgreSQL answers"}})
async def ready(request: Request, client: RedisDep) -> JSONResponse:
    redis_state = await _redis_health(client)
    deps = {"redis": redis_state, "postgresql": {"ok": None} if redis_state["ok"] else await _postgres_health(request)}
    source = _ready(deps)
    return JSONResponse({"status": "ready" if source else "not ready", "serving_from": source},
                        status_code=200 if source else 503)


@router.get("/health", response_model=HealthOut, summary="Each dependency's state",
            description="Anonymous callers get each dependency's `ok`/`configured` only; operators and admins "
                        "get details (latencies, errors, the dataflow's lag and races).",
            responses={503: {"description": "neither Redis nor PostgreSQL answers: no reads can be served"}})
async def health(request: Request, client: RedisDep, settings: SettingsDep, hub: HubDep,
                 principal: PrincipalDep) -> JSONResponse:
    redis_state, pg_state, kafka_state, flow_state = await asyncio.gather(
        _redis_health(client), _postgres_health(request), _kafka_health(request, settings.kafka_bootstrap),
        _flow_health(request, client))
    deps: dict[str, dict[str, Any]] = {
        "redis": redis_state, "postgresql": pg_state, "kafka": kafka_state,
        "schema_registry": {"ok": None, "configured": bool(settings.schema_registry_url)},
        "ingest": _ingest_health(request), "dataflow": flow_state}
    down = [name for name, d in deps.items() if d.get("configured") and d.get("ok") is False]
    source = _ready(deps)
    if principal.role < Role.OPERATOR:
        deps = {name: {k: v for k, v in d.items() if k in PUBLIC_FIELDS} for name, d in deps.items()}
    body = {"status": "ok" if not down else "degraded", "serving_from": source, "down": down,
            "dependencies": deps, "sse_clients": hub.clients, "sse_channels": len(hub.channels)}
    return JSONResponse(body, status_code=200 if source else 503)


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(metrics: MetricsDep, hub: HubDep) -> Response:
    metrics.sse_channels.set(len(hub.channels))
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
