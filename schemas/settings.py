"""Settings for every racewire deployable, read from ``RACEWIRE_*`` environment variables.

Built once at start-up (never at import) by :func:`load_settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.redis_layout import EVENTS_MAXLEN


def _comma_list(value: Any) -> Any:
    """``"a, b"`` → ``["a", "b"]`` (environment variables hold comma-separated lists)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """One settings object; each deployable reads the part it needs."""

    model_config = SettingsConfigDict(env_prefix="RACEWIRE_", frozen=True, extra="ignore")

    # external services: when unset, `racewire up` starts embedded ones
    kafka_bootstrap: str | None = Field(None, description="Kafka bootstrap servers, host:port[,host:port]")
    redis_url: str | None = Field(None, description="Redis URL, redis://host:port/db")
    database_url: str | None = Field(None, description="PostgreSQL URL, postgresql://user@host:port/db")
    schema_registry_url: str | None = Field(
        None, description="Confluent-compatible schema registry URL (http://… or mock://…)"
    )

    # ports of the embedded servers (defaults avoid the standard 9092/6379/5432/8081)
    http_port: int = Field(8000, ge=1, le=65535, description="HTTP port of the serving layer")
    kafka_port: int = Field(19092, ge=1, le=65535, description="port of the embedded broker")
    redis_port: int = Field(16379, ge=1, le=65535, description="port of the embedded Redis-compatible server")
    postgres_port: int = Field(15432, ge=1, le=65535, description="port of the embedded PostgreSQL")
    registry_port: int = Field(18081, ge=1, le=65535, description="port of the embedded schema registry")
    data_dir: Path = Field(Path(".racewire"), description="where embedded servers and recovery keep data")

    # dataflow
    workers: int = Field(1, ge=1, description="Bytewax workers for `racewire flow race`")
    flow_addresses: str | None = Field(
        None, description="host:port of every dataflow process of a multi-machine cluster, ';'-separated"
    )
    leaderboard_max_rate_hz: float = Field(
        4.0, gt=0, description="most telemetry-driven leaderboard snapshots per second per race"
    )
    input_partitions: int = Field(8, ge=1, description="partitions of the input topics when created")
    kafka_fetch_wait_ms: int = Field(
        50, ge=1, le=10_000,
        description="longest the broker holds an empty fetch of the flow's input (fetch.wait.max.ms); the embedded "
                    "broker answers late by about a quarter of it and needs ~50 ms to search long partitions; "
                    "a Kafka cluster answers at once: 500 costs it nothing")
    flow_metrics_port: int | None = Field(
        None, ge=1, le=65535,
        description="serve the dataflow's Prometheus metrics on this port (per process: port + process index)")
    strategy: bool = Field(True, description="publish strategy calls for every car at the end of every lap")
    models_dir: Path | None = Field(
        None, description="strategy model artifacts (default: the ones shipped with racewire)")

    # dataflow sinks (issue 11, flow output): how the Redis and PostgreSQL sinks wait out an outage
    sink_retry_max_backoff_s: float = Field(
        5.0, gt=0, description="longest wait between two retries of a sink write while its store is unreachable")
    sink_give_up_after_s: float = Field(
        0.0, ge=0, description="stop the dataflow when one sink outage lasts longer than this many seconds "
                               "(0: never; the flow waits for the store, holding its input)")

    # operations (racewire up supervision, resilient producers): issue 11
    restart_max_crashes: int = Field(
        5, ge=1, description="racewire up stops when one child crashes this many times within restart_window_s")
    restart_window_s: float = Field(
        60.0, gt=0, description="window (seconds) in which restart_max_crashes crashes of one child stop racewire up")
    restart_backoff_s: float = Field(
        0.5, ge=0, description="wait before the first restart of a crashed child; doubles per crash in the window")
    restart_backoff_max_s: float = Field(10.0, ge=0, description="longest wait before restarting a crashed child")
    producer_spool_dir: Path | None = Field(
        None, description="where producers spool records while the broker is away (default: DATA_DIR/spool)")
    producer_spool_max_bytes: int = Field(
        256 * 1024 * 1024, ge=4096,
        description="most bytes each producer spools to disk while the broker is away; then the simulator and "
                    "sources wait, the flow's sink holds back, ingest answers 503 with Retry-After")

    # serving
    api_key: SecretStr = Field(SecretStr("dev-key"), description="API key for write and admin endpoints")
    events_stream_maxlen: int = Field(EVENTS_MAXLEN, ge=100, description="cap of each race's Redis event stream")
    gc_tuning: bool = Field(True, description="serving: freeze start-up objects and collect cycles less often "
                            "(false: Python's default collector, for comparison)")
    gc_stats: bool = Field(False, description="serving: log the number and longest pause of cyclic collections "
                           "at exit")

    # serving: security and abuse limits (issue 11)
    api_keys: SecretStr = Field(
        SecretStr(""), description="more API keys with a role each, comma-separated `KEY:ROLE` or "
        "`sha256:HEX:ROLE` (the key's SHA-256), ROLE `operator` or `admin`; RACEWIRE_API_KEY is an admin key")
    token_secret: SecretStr = Field(
        SecretStr(""), description="HMAC secret signing the OAuth2 bearer tokens (JWT, HS256) of "
        "POST /api/auth/token; at least 32 characters outside loopback (empty: a random one per process)")
    feed_url: str = Field("https://livetiming.formula1.com", description="base URL of the live-timing "
                          "service `racewire live` follows (SignalR Core at /signalrcore)")
    f1tv_token: SecretStr = Field(SecretStr(""), description="F1TV subscription token (a JWT) presented to the "
                                  "live-timing service; without it CarData.z/Position.z are not sent")
    token_ttl_s: int = Field(3600, ge=60, le=3600, description="lifetime of an issued bearer token, seconds")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated addresses/networks of reverse proxies whose "
        "X-Forwarded-For/-Proto are believed (empty: none; '*' is refused)")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated origins allowed to call the API from a browser "
        "(empty: same origin only)")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest request body from an "
                                "operator or admin, bytes (413 beyond, checked as it streams in)")
    max_public_body_bytes: int = Field(64 * 1024, ge=1024, description="largest request body without "
                                       "credentials, bytes")
    max_simulation_work: int = Field(
        50_000_000, ge=1000, description="most simulated car-laps (cars x laps left x sims x strategies) "
        "one simulation or strategy request may cost")
    graphql_max_depth: int = Field(8, ge=2, le=50, description="deepest GraphQL selection")
    graphql_max_aliases: int = Field(20, ge=1, description="most aliases in one GraphQL document")
    graphql_max_tokens: int = Field(2000, ge=50, description="most tokens in one GraphQL document")
    graphql_max_cost: int = Field(20_000, ge=100, description="most rows one GraphQL query may ask for "
                                  "(list sizes multiplied along each path, summed)")

    _lists = field_validator("trusted_proxies", "cors_origins", mode="before")(_comma_list)

    @field_validator("trusted_proxies")
    @classmethod
    def _no_wildcard_proxy(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            if entry == "*":
                raise ValueError("'*' would believe X-Forwarded-For from anyone (and so let any client pick its "
                                 "own address); list the proxies' addresses or network, e.g. 10.0.0.0/8")
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (e.g. 172.18.0.0/16)") from None
        return value


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, with explicit overrides (CLI flags) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
