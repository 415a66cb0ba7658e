"""Helpers for tests and benchmarks: the app under a real uvicorn in a thread, and an SSE parser."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from serving.app import Server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_in_thread(app: Any, port: int | None = None, startup_timeout_s: float = 15.0) -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 in a background thread; yields its base URL."""
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


@dataclass(slots=True)
class SSEEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


@dataclass
class SSEParser:
    """Incremental ``text/event-stream`` parser (the WHATWG algorithm, comments skipped).

    >>> p = SSEParser()
    >>> [e.event for e in p.feed(b": ping\\r\\n\\r\\nid: 1-0\\r\\nevent: event\\r\\ndata: {}\\r\\n\\r\\n")]
    ['event']
    >>> p.last_id, p.comments
    ('1-0', 1)
    """

    buffer: bytes = b""
    last_id: str | None = None
    comments: int = 0
    _cur: SSEEvent = field(default_factory=SSEEvent)
    _has: bool = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self.buffer += chunk
        out: list[SSEEvent] = []
        while True:
            idx = min((i for i in (self.buffer.find(b"\r\n"), self.buffer.find(b"\n")) if i >= 0), default=-1)
            if idx < 0:
                return out
            sep = 2 if self.buffer[idx:idx + 2] == b"\r\n" else 1
            line, self.buffer = self.buffer[:idx].decode("utf-8"), self.buffer[idx + sep:]
            if not line:
                if self._has:
                    out.append(self._cur)
                self._cur, self._has = SSEEvent(id=self.last_id), False
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                self._cur.data = value if not self._has or not self._cur.data else self._cur.data + "\n" + value
                self._has = True
            elif name == "event":
                self._cur.event = value
                self._has = True
            elif name == "id":
                self.last_id = value
                self._cur.id = value
            elif name == "retry" and value.isdigit():
                self._cur.retry = int(value)
