"""What every benchmark (and the tests) share: the services it runs against (configured ones, else
embedded ones started for the run: :mod:`infra.services.stack`, re-exported here), the app under a
real uvicorn in a thread, percentiles and the memory high-water mark of a process tree."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from infra.services.stack import redis_service, services

__all__ = ["peak_rss_mb", "percentile", "redis_service", "serve_in_thread", "services", "status_mb",
           "tree_peak_rss_mb"]


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
