"""The services a one-off run needs (a benchmark, ``racewire replay``/``livetiming`` through the
pipeline): the configured ones (``RACEWIRE_*``), else embedded ones started for the run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def services(workdir: Path) -> Iterator[dict[str, str]]:
    """Broker, Redis and registry for a run (a benchmark, ``racewire replay``): the configured ones,
    else embedded ones started for the run under ``workdir``."""
    from infra.registry import RegistryServer
    from infra.services import EmbeddedKafka, free_port
    from schemas.settings import load_settings

    s = load_settings()
    with contextlib.ExitStack() as stack:
        bootstrap = s.kafka_bootstrap
        if not bootstrap:
            kafka = stack.enter_context(EmbeddedKafka(port=free_port(), data_dir=workdir / "kafka"))
            bootstrap = kafka.bootstrap
        redis_url = stack.enter_context(redis_service(workdir))
        registry_url = s.schema_registry_url
        if not registry_url or registry_url.startswith("mock://"):
            registry = RegistryServer(data_dir=workdir / "registry", port=0)
            registry.start()
            stack.callback(registry.stop)
            registry_url = registry.url
        yield {"bootstrap": bootstrap, "redis_url": redis_url, "registry_url": registry_url}


@contextlib.contextmanager
def redis_service(workdir: Path) -> Iterator[str]:
    """Redis for a run: ``RACEWIRE_REDIS_URL``, else a local one on 6379, else an embedded one."""
    from infra.services import EmbeddedRedis, free_port, redis_reachable
    from schemas.settings import load_settings

    url = load_settings().redis_url or "redis://127.0.0.1:6379/0"
    if redis_reachable(url):
        yield url
        return
    with EmbeddedRedis(port=free_port(), data_dir=workdir / "redis") as server:
        yield server.url
