"""Settings for every racewire deployable, read from ``RACEWIRE_*`` environment variables.

Built once at start-up (never at import) by :func:`load_settings`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    strategy: bool = Field(True, description="publish strategy calls for every car at the end of every lap")
    models_dir: Path | None = Field(
        None, description="strategy model artifacts (default: the ones shipped with racewire)")

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
    events_stream_maxlen: int = Field(20000, ge=100, description="cap of each race's Redis event stream")


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, with explicit overrides (CLI flags) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
