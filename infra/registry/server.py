"""The registry served by uvicorn in a background thread, and ``racewire registry``."""

from __future__ import annotations

import argparse
import errno
import http.client
import logging
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

import uvicorn
from fastapi import FastAPI

from infra.registry.api import create_app
from infra.registry.errors import PortInUseError
from infra.registry.store import DataDirLock, SchemaStore

log = logging.getLogger(__name__)


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ValueError(f"cannot listen on host {host!r}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(host, port) from exc
        raise
    return sock


class RegistryServer:
    """The registry served by uvicorn in a background thread.

    ``port=0`` picks a free port; :attr:`url` says which. ``start()`` returns once the server
    answers HTTP; ``stop()`` shuts it down and frees the port and the data directory.
    """

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._lock = DataDirLock(self.data_dir / "registry")
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app: FastAPI | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the registry server is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, with a loopback address when listening on all interfaces."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def store(self) -> SchemaStore:
        if self.app is None:
            raise RuntimeError("the registry server is not started")
        return self.app.state.store  # type: ignore[no-any-return]

    def start(self, timeout: float = 15.0) -> Self:
        """Take the data directory, bind the port, serve, and wait until it answers."""
        if self.running:
            return self
        self._lock.acquire()
        try:
            self.app = create_app(self.data_dir)
            self._socket = _bind(self.host, self._requested_port)
            self._port = int(self._socket.getsockname()[1])
            config = uvicorn.Config(
                self.app,
                log_level="warning",
                access_log=False,
                lifespan="off",
                log_config=None,
                timeout_graceful_shutdown=5,
            )
            self._server = uvicorn.Server(config)
            self._thread = threading.Thread(
                target=self._server.run,
                kwargs={"sockets": [self._socket]},
                name=f"racewire-registry-{self._port}",
                daemon=True,
            )
            self._thread.start()
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("schema registry listening on %s, state in %s", self.url, self.store.path)
        return self

    def _wait_ready(self, timeout: float) -> None:
        host = self.url.removeprefix("http://").rpartition(":")[0].strip("[]")
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError("the schema registry server exited during start-up")
            conn = http.client.HTTPConnection(host, self.port, timeout=1.0)
            try:
                conn.request("GET", "/")
                if conn.getresponse().status == 200:
                    return
            except (OSError, http.client.HTTPException) as exc:
                last = exc
            finally:
                conn.close()
            time.sleep(0.02)
        raise TimeoutError(f"the schema registry did not answer on {self.url} in {timeout:g} s: {last!r}")

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down; safe to call more than once."""
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout)
            if thread.is_alive():
                server.force_exit = True
                thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        self._lock.release()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1; 0.0.0.0 for all)"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port (default: RACEWIRE_REGISTRY_PORT, 18081; 0: any free port)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="state goes to DATA_DIR/registry (default: RACEWIRE_DATA_DIR, .racewire)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve in the foreground until SIGINT or SIGTERM; 2 when it cannot start."""
    from pydantic import ValidationError

    from schemas.settings import load_settings

    try:
        settings = load_settings(data_dir=args.data_dir)
    except ValidationError as exc:
        print(f"racewire registry: invalid settings: {exc}", file=sys.stderr)
        return 2
    port = settings.registry_port if args.port is None else args.port
    if not 0 <= port <= 65535:
        print(f"racewire registry: --port {port} is not a TCP port (0-65535)", file=sys.stderr)
        return 2
    server = RegistryServer(settings.data_dir, host=args.host, port=port)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start()
        except (OSError, RuntimeError, ValueError) as exc:  # port taken, data dir unusable, bad host
            print(f"racewire registry: cannot start: {exc}", file=sys.stderr)
            return 2
        print(f"schema registry listening on {server.url} (state: {server.store.path})", flush=True)
        while not stop.wait(0.5):
            if not server.running:
                log.error("the schema registry server stopped unexpectedly")
                return 1
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
