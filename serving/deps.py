"""Dependencies for route handlers (``Annotated[..., Depends(...)]``), so handlers stay short."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, HTTPException, Path, Query, Request, status
from pydantic import AfterValidator

from schemas.settings import Settings
from serving.auth import Operator
from serving.ingest import KafkaIngest
from serving.metrics import Metrics
from serving.simulations import SimulationManager
from serving.sse import Hub
from serving.store import STREAM_ID_PATTERN, RaceStore, StreamId

RACE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
#: the largest PostgreSQL ``integer``: laps and other counts compared with int columns stay below it
PG_INT_MAX = 2**31 - 1


def _stream_id(value: str | None) -> str | None:
    """A stream id Redis accepts (:meth:`StreamId.parse`, the one parser), else a 422 naming the parameter."""
    if value is not None:
        StreamId.parse(value)
    return value


#: ``after=<stream id>`` query parameters
StreamIdQuery = Annotated[str | None, Query(pattern=STREAM_ID_PATTERN, description="a stream id such as "
                                            "1700000000000-0 (two unsigned 64-bit integers)"),
                          AfterValidator(_stream_id)]


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_redis(request: Request) -> aioredis.Redis:
    client: aioredis.Redis = request.app.state.redis
    return client


def get_store(request: Request) -> RaceStore:
    store: RaceStore = request.app.state.store
    return store


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def get_simulations(request: Request) -> SimulationManager:
    manager: SimulationManager = request.app.state.simulations
    return manager


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
StoreDep = Annotated[RaceStore, Depends(get_store)]
HubDep = Annotated[Hub, Depends(get_hub)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SimulationsDep = Annotated[SimulationManager, Depends(get_simulations)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def rate_limited(request: Request) -> None:
    """Public read endpoints: a token bucket per client IP; 429 with Retry-After when it is empty."""
    limiter = request.app.state.limiter
    ip = client_ip(request)
    if not limiter.allow(ip):
        request.app.state.metrics.rate_limited.inc()
        wait = max(1, round(limiter.retry_after(ip) + 0.5))
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            detail=f"rate limit: at most {limiter.rate:g} requests/s per client; retry in {wait} s",
                            headers={"Retry-After": str(wait)})


RateLimited = Depends(rate_limited)

#: write endpoints (ingest, simulations): the operator role (see :mod:`serving.auth`)
Authenticated = Operator


async def existing_race(store: StoreDep,
                        race_id: Annotated[str, Path(pattern=RACE_ID_PATTERN, description="race id, e.g. sim-42")]
                        ) -> str:
    """The path's race id, once Redis knows the race (else 404 naming the known races)."""
    await store.require(race_id)
    return race_id


RaceId = Annotated[str, Depends(existing_race)]


def get_ingest(request: Request) -> KafkaIngest:
    """The app's Kafka producer, created on first use; 503 when Kafka or the registry is not configured."""
    settings: Settings = request.app.state.settings
    missing = [name for name, value in (("RACEWIRE_KAFKA_BOOTSTRAP", settings.kafka_bootstrap),
                                        ("RACEWIRE_SCHEMA_REGISTRY_URL", settings.schema_registry_url)) if not value]
    if missing:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail=f"ingest is off: this server has no {' and no '.join(missing)}; "
                                   "set them (or run `racewire up`) to produce records to Kafka")
    if request.app.state.ingest is None:
        request.app.state.ingest = KafkaIngest.from_settings(settings)
    ingest: KafkaIngest = request.app.state.ingest
    return ingest
