"""What every benchmark (and the tests) share: the services it runs against (configured ones, else
embedded ones started for the run), the app under a real uvicorn in a thread, and the memory
high-water mark of a process tree."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil


@contextlib.contextmanager
def services(workdir: Path) -> Iterator[dict[str, str]]:
    """Broker, Redis and registry for a benchmark: configured ones or embedded ones."""
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
    """Redis for a benchmark: ``RACEWIRE_REDIS_URL``, else a local one on 6379, else an embedded one."""
    from infra.services import EmbeddedRedis, free_port, redis_reachable
    from schemas.settings import load_settings

    url = load_settings().redis_url or "redis://127.0.0.1:6379/0"
    if redis_reachable(url):
        yield url
        return
    with EmbeddedRedis(port=free_port(), data_dir=workdir / "redis") as server:
        yield server.url


@contextlib.contextmanager
def serve_in_thread(app: Any, port: int | None = None, startup_timeout_s: float = 15.0) -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 in a background thread; yields its base URL."""
    import uvicorn

    from infra.services import free_port
    from serving.app import Server

    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=5, proxy_headers=False)  # as `racewire serve`: the app decides
    server = Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the test server on port {port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def status_mb(pid: int, field: str) -> float:
    """A memory figure of a process's ``/proc`` status (``VmRSS``, ``VmHWM``...), MB; 0 once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """A process's memory high-water mark (VmHWM), MB."""
    return status_mb(pid, "VmHWM")


def tree_peak_rss_mb(proc: psutil.Process) -> float:
    """:func:`peak_rss_mb` summed over a process and its children."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += peak_rss_mb(p.pid)
    return round(total, 1)


def percentile(values: list[float], q: float, ndigits: int = 1) -> float | None:
    """The ``q``-th percentile (nearest rank), rounded; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))], ndigits)
