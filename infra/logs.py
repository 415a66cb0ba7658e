"""Logging for every racewire process: :func:`configure` once at start-up.

``configure(json=True, ...)``: one JSON object per line on stderr (python-json-logger), with ``ts``
(ISO-8601 UTC), ``level``, ``logger``, ``message``, the ``request_id`` of the HTTP request being served
(``X-Request-ID``, set by serving's correlation-id middleware; ``null`` outside a request) and every
``extra={...}`` field at the top level::

    {"ts": "2026-12-04T17:31:05.120+00:00", "level": "INFO", "logger": "racewire.serving.edge",
     "message": "refused POST /api/events: ...", "request_id": "8b0c7a7e...", "status": 401}

``configure(json=False, ...)``: human-readable lines, for a person at a terminal (``racewire up``'s
own progress).

Log with ``logging.getLogger("racewire.<area>")`` and pass structured data as ``extra``, e.g.
``log.warning("record rejected", extra={"event_id": e, "race_id": r})``, never only inside the message.
"""

from __future__ import annotations

import logging
import sys

from asgi_correlation_id import CorrelationIdFilter
from pythonjsonlogger.json import JsonFormatter

#: loggers that are chatty at INFO (HTTP client libraries): WARNING and above only
QUIET = ("httpx", "httpx2", "httpcore", "httpcore2", "hpack", "asyncio")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure` installs (so a second call replaces it instead of adding one)."""


def json_formatter() -> logging.Formatter:
    return JsonFormatter("%(levelname)s %(name)s %(message)s %(correlation_id)s", timestamp="ts",
                         rename_fields={"levelname": "level", "name": "logger", "correlation_id": "request_id"},
                         json_ensure_ascii=False)


def configure(json: bool, level: str) -> None:
    """Send every log record of this process to stderr, as JSON lines or as text, at ``level``."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler(sys.stderr)
    handler.addFilter(CorrelationIdFilter())
    handler.setFormatter(json_formatter() if json else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
