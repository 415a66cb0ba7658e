"""``racewire serve``: the web app (REST, SSE, the page) under uvicorn.

Example::

    RACEWIRE_REDIS_URL=redis://127.0.0.1:6379/0 racewire serve --port 8000
    curl -N http://127.0.0.1:8000/api/races/sim-1/stream
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.settings import Settings

log = logging.getLogger("racewire.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default RACEWIRE_HTTP_PORT, 8000)")
    parser.add_argument("--redis-url", default=None, help="Redis URL (default RACEWIRE_REDIS_URL)")
    parser.add_argument("--rate-limit", type=float, default=None,
                        help="read requests per second per client IP (default 20; 0 disables)")
    parser.add_argument("--sse-queue", type=int, default=None, help="messages queued per SSE client (default 256)")
    parser.add_argument("--ping", type=float, default=None, help="SSE keep-alive interval in seconds (default 15)")
    parser.add_argument("--fanout-budget", type=float, default=None,
                        help="SSE deliveries per second to stay within by thinning telemetry-only leaderboards "
                             "(default 0: never thin)")
    parser.add_argument("--backlog", type=int, default=4096, help="listen backlog (many clients connecting at once)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--trusted-proxies", default=None,
                        help="reverse proxies whose X-Forwarded-For/-Proto are believed (rate limits are per "
                             "client): comma-separated IPs/networks (default RACEWIRE_TRUSTED_PROXIES: none)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _raise_fd_limit() -> None:
    """Each SSE client holds a socket: allow as many as the hard limit permits."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _tune_gc(settings: Settings) -> None:
    """Fewer, cheaper cyclic collections: thousands of long-lived streams make each full collection
    long (a pause for every client); what is loaded at start-up is frozen out of collections."""
    import gc

    if not settings.gc_tuning:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    if settings.gc_stats:
        import atexit
        import time

        stats = {"n": 0, "total": 0.0, "max": 0.0, "t": 0.0}

        def cb(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                stats["t"] = time.perf_counter()
            else:
                d = time.perf_counter() - stats["t"]
                stats["n"] += 1
                stats["total"] += d
                stats["max"] = max(stats["max"], d)

        gc.callbacks.append(cb)
        atexit.register(lambda: log.warning("gc: %s", stats))


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import uvicorn
    from pydantic import ValidationError

    from schemas.settings import load_settings
    from serving.app import Server, ServingOptions, create_app
    from serving.auth import Authenticator

    try:
        settings = load_settings(redis_url=args.redis_url, http_port=args.port, trusted_proxies=args.trusted_proxies)
        weaknesses = Authenticator(settings).weaknesses
    except (ValidationError, ValueError) as exc:
        raise SystemExit(f"racewire serve: invalid settings: {exc}") from None
    _raise_fd_limit()
    if not _is_loopback(args.host) and weaknesses:
        raise SystemExit(f"racewire serve: refusing to listen on {args.host} with weak secrets: "
                         + "; ".join(weaknesses) + ". Set real secrets (e.g. `python -c 'import secrets; "
                         "print(secrets.token_urlsafe(32))'`), or bind to 127.0.0.1 for local use")
    opts = ServingOptions()
    changes = {k: v for k, v in (("rate_limit_per_s", args.rate_limit), ("sse_queue_size", args.sse_queue),
                                 ("sse_ping_s", args.ping),
                                 ("sse_fanout_budget_per_s", args.fanout_budget)) if v is not None}
    opts = dataclasses.replace(opts, **changes)  # type: ignore[arg-type]
    try:
        app = create_app(settings, opts)
    except ValueError as exc:
        raise SystemExit(f"racewire serve: {exc}") from None
    _tune_gc(settings)
    log.info("serving on http://%s:%d", args.host, settings.http_port)
    config = uvicorn.Config(app, host=args.host, port=settings.http_port,
                            log_level=logging.getLogger().getEffectiveLevel(), access_log=args.access_log,
                            log_config=None,  # uvicorn's loggers go through the process's (JSON) handler
                            backlog=args.backlog, timeout_graceful_shutdown=5, timeout_keep_alive=30,
                            # forwarded headers are the app's business (RACEWIRE_TRUSTED_PROXIES), never uvicorn's
                            # default of trusting 127.0.0.1
                            proxy_headers=False)
    Server(config).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m infra.serve_cli``: the same as ``racewire serve`` (benchmarks start it this way)."""
    parser = argparse.ArgumentParser(prog="racewire serve", description="Serve the racewire web app.")
    parser.add_argument("--log-level", default="INFO")
    add_arguments(parser)
    args = parser.parse_args(argv)
    from infra.logs import configure

    configure(json=True, level=args.log_level)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
