"""The serving app: :func:`create_app` builds it from :class:`~schemas.settings.Settings`.

One process holds one async Redis client (a connection pool), one SSE :class:`~serving.sse.Hub`,
one rate limiter and, when Kafka and a schema registry are configured, one Kafka producer. They are
made in the lifespan and live on ``app.state``; handlers reach them through :mod:`serving.deps`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
import uvicorn
from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from schemas.settings import Settings
from serving import graphql
from serving.api import api_router, root_router
from serving.auth import Authenticator
from serving.edge import EdgeMiddleware, docs_csp
from serving.ingest import KafkaIngest
from serving.metrics import Metrics, MetricsMiddleware
from serving.ratelimit import RateLimiter
from serving.simulations import DEFAULT_COMMAND, SimulationError, SimulationManager
from serving.sse import Hub
from serving.store import RaceNotFound, RaceStore

log = logging.getLogger("racewire.serving")


@dataclass(frozen=True)
class ServingOptions:
    """Knobs of the serving process that are not deployment settings (tests and benchmarks tune them)."""

    rate_limit_per_s: float = 20.0  # per client IP on read endpoints; 0 disables
    rate_limit_burst: float = 60.0
    sse_queue_size: int = 256  # messages per client before it is resynchronised
    sse_ping_s: float = 15.0
    sse_send_timeout_s: float = 30.0  # a client that takes longer to accept one write is dropped
    sse_block_ms: int = 1000  # XREAD BLOCK; also bounds how long stopping a reader takes
    sse_linger_s: float = 10.0
    # deliveries per second (messages x clients) this process aims to stay within by thinning
    # telemetry-only leaderboards (the page animates cars between snapshots); 0 = no thinning. Off by
    # default: a reader that falls behind already coalesces what it reads into the newest snapshot
    sse_fanout_budget_per_s: float = 0.0
    redis_max_connections: int = 256
    simulate_command: tuple[str, ...] = field(default=DEFAULT_COMMAND)
    max_simulations: int = 10


def static_dir() -> Path:
    return Path(str(resources.files("serving").joinpath("static")))


def create_app(settings: Settings, options: ServingOptions | None = None) -> FastAPI:
    """Build the app. Nothing connects until the lifespan starts (i.e. when the server runs)."""
    opts = options or ServingOptions()
    if not settings.redis_url:
        raise ValueError("serving needs Redis: set RACEWIRE_REDIS_URL (e.g. redis://127.0.0.1:6379/0) "
                         "or run `racewire up`, which starts everything")
    redis_url = settings.redis_url
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # a blocking pool: under a burst (thousands of clients connecting) commands wait for a connection
        # instead of failing; each race with clients holds one connection for its XREAD BLOCK reader
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=opts.redis_max_connections, timeout=10, decode_responses=False,
            health_check_interval=30, socket_connect_timeout=5)
        client = aioredis.Redis.from_pool(pool)
        hub = Hub(client, queue_size=opts.sse_queue_size, block_ms=opts.sse_block_ms, linger_s=opts.sse_linger_s,
                  fanout_budget_per_s=opts.sse_fanout_budget_per_s,
                  on_broadcast=metrics.on_broadcast)
        env = {k: v for k, v in (("RACEWIRE_KAFKA_BOOTSTRAP", settings.kafka_bootstrap),
                                 ("RACEWIRE_SCHEMA_REGISTRY_URL", settings.schema_registry_url),
                                 ("RACEWIRE_REDIS_URL", settings.redis_url)) if v}
        app.state.redis = client
        app.state.store = RaceStore(client)
        app.state.hub = hub
        app.state.ingest = None
        starting: asyncio.Future[None] | None = None
        if settings.kafka_bootstrap and settings.schema_registry_url:
            # made at start, not on the first request: records an earlier process spooled go out now
            app.state.ingest = KafkaIngest.from_settings(settings)
            starting = asyncio.create_task(asyncio.to_thread(app.state.ingest.start))
        app.state.ingest_lock = asyncio.Lock()
        app.state.simulations = SimulationManager(env, opts.simulate_command, opts.max_simulations)
        app.state.kafka_health = None
        app.openapi()  # built once now: the edge reads each operation's role from it on the first request
        for weakness in auth.weaknesses:  # `racewire serve` refuses these outside loopback
            log.warning("weak secret (accepted on loopback only): %s", weakness)
        log.info("serving started (redis %s, kafka %s)", _redacted(redis_url), settings.kafka_bootstrap or "off")
        try:
            yield
        finally:
            await hub.close()
            await app.state.simulations.close()
            ingest: KafkaIngest | None = app.state.ingest
            if ingest is not None:
                if starting is not None:
                    await asyncio.gather(starting, return_exceptions=True)
                await asyncio.to_thread(ingest.close)
            await client.aclose()
            log.info("serving stopped")

    offline_docs = _swagger_assets()
    app = FastAPI(
        docs_url=None if offline_docs else "/docs",
        redoc_url=None if offline_docs else "/redoc",
        title="racewire",
        summary="Live Formula 1 race intelligence: REST for state, Server-Sent Events for change.",
        version="0.1.0",
        lifespan=lifespan,
        openapi_tags=[
            {"name": "races", "description": "Live race state from Redis."},
            {"name": "stream", "description": "Server-Sent Events with resume (`Last-Event-ID`)."},
            {"name": "ingest", "description": "Authenticated ingest of input records (API key)."},
            {"name": "simulations", "description": "Start, watch and stop simulated races (API key)."},
            {"name": "strategy", "description": "Strategy calls, model predictions, Monte Carlo race simulations."},
            {"name": "ops", "description": "Health and Prometheus metrics."},
            {"name": "auth", "description": "Bearer tokens for API keys (OAuth2 client credentials)."},
        ],
    )
    auth = Authenticator(settings)
    app.state.settings = settings
    app.state.options = opts
    app.state.metrics = metrics
    app.state.auth = auth
    app.state.limiter = RateLimiter(opts.rate_limit_per_s, opts.rate_limit_burst)
    # middleware, innermost first: the edge (credentials before bodies, body limits, security headers),
    # metrics, CORS (only with an allow-list), forwarded headers (only from trusted proxies), request ids
    app.add_middleware(EdgeMiddleware, auth=auth, openapi=app.openapi, max_body_bytes=settings.max_body_bytes,
                       max_public_body_bytes=settings.max_public_body_bytes,
                       docs_policy=docs_csp(_inline_script_hashes(_docs_html(app))) if offline_docs else None)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "X-API-Key", "Last-Event-ID",
                                          "X-Request-ID"],
                           expose_headers=["X-Request-ID", "X-Racewire-Source", "Retry-After"], max_age=600)
    if settings.trusted_proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    app.add_middleware(CorrelationIdMiddleware, header_name="X-Request-ID")

    @app.exception_handler(RaceNotFound)
    async def _race_not_found(request: Request, exc: RaceNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(SimulationError)
    async def _simulation_error(request: Request, exc: SimulationError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("Redis unavailable for %s: %s", request.url.path, exc)
        return JSONResponse({"detail": f"Redis is unavailable ({exc}); retry shortly"}, status_code=503,
                            headers={"Retry-After": "2"})

    if offline_docs:
        _serve_docs_offline(app, offline_docs)
    app.include_router(api_router)
    app.include_router(root_router)
    app.include_router(graphql.router_for(settings))
    app.mount("/", StaticFiles(directory=static_dir(), html=True), name="static")
    return app


def _swagger_assets() -> Path | None:
    """Swagger UI's files (version 5: OpenAPI 3.1) from the ``fastapi-offline`` package, when installed:
    /docs then loads nothing from outside this server (FastAPI's default pages load it from a CDN)."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    path = Path(fastapi_offline.__file__).parent / "static"
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def _docs_html(app: FastAPI) -> bytes:
    from fastapi.openapi.docs import get_swagger_ui_html

    return bytes(get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title="racewire API",
                                     swagger_js_url="/docs-static/swagger-ui-bundle.js",
                                     swagger_css_url="/docs-static/swagger-ui.css",
                                     swagger_favicon_url="/docs-static/favicon.png").body)


def _inline_script_hashes(html: bytes) -> list[str]:
    """SHA-256 (base64) of each inline ``<script>`` of a page, as a CSP ``'sha256-…'`` source wants them."""
    return [base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode()
            for m in re.finditer(rb"<script>(.*?)</script>", html, re.S)]


def _serve_docs_offline(app: FastAPI, assets: Path) -> None:
    from fastapi.responses import HTMLResponse

    app.mount("/docs-static", StaticFiles(directory=assets), name="docs-static")
    page = _docs_html(app)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page)


def _redacted(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url



class Server(uvicorn.Server):
    """uvicorn's server, ending every SSE stream first when it shuts down, so open streams do not hold
    the graceful shutdown until its timeout (sse-starlette does the same on signals in the main thread;
    this also covers servers run in a thread, as tests and benchmarks do)."""

    async def shutdown(self, sockets: Any = None) -> None:
        app = self.config.loaded_app if self.config.loaded else None
        hub = _find_hub(app)
        if hub is not None:
            await hub.close()
        await super().shutdown(sockets)


def _find_hub(app: Any) -> Hub | None:
    # the loaded app may be wrapped in uvicorn's middleware: walk down to the FastAPI instance
    for _ in range(8):
        if app is None:
            return None
        state = getattr(app, "state", None)
        hub = getattr(state, "hub", None) if state is not None else None
        if isinstance(hub, Hub):
            return hub
        app = getattr(app, "app", None)
    return None
