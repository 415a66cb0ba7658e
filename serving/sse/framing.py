"""SSE frames, ids and leaderboard deltas, and the parser that reads frames back. Pure: no asyncio,
no Redis.

SSE ids: an ``event``/``commentary`` message's id is its ``race:{id}:events`` entry id. A
``leaderboard`` message's id is ``<events cursor>.v<version>``: the last events-stream id the client
has been sent plus the snapshot version (entry ids of two different streams do not form one order,
so the events cursor is what resuming needs; the version avoids resending an unchanged snapshot).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sse_starlette.event import ServerSentEvent

from serving.store import StreamEntry, StreamId

#: SSE event name of leaderboard deltas (clients that ask with ``?delta=1``)
DELTA_EVENT = "leaderboard-delta"
_ROWLESS = ("rows", "positions")


def encode_frame(event: str, event_id: str, data: bytes | str, retry: int | None = None) -> bytes:
    """One SSE frame, byte for byte as sse-starlette encodes it (``\\r\\n`` line ends).

    >>> encode_frame("event", "5-0", b'{"a":1}')
    b'id: 5-0\\r\\nevent: event\\r\\ndata: {"a":1}\\r\\n\\r\\n'
    """
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return ServerSentEvent(data=text, event=event, id=event_id, retry=retry).encode()


def leaderboard_id(cursor: StreamId, version: int) -> str:
    """SSE id of a leaderboard message.

    >>> leaderboard_id(StreamId(1700000000000, 3), 57)
    '1700000000000-3.v57'
    """
    return f"{cursor}.v{version}"


def parse_last_event_id(value: str) -> tuple[StreamId, int]:
    """Cursor and leaderboard version from a ``Last-Event-ID`` (``-1``: no version).

    >>> parse_last_event_id("1700000000000-3.v57")
    (StreamId(ms=1700000000000, seq=3), 57)
    >>> parse_last_event_id("1700000000000-4")
    (StreamId(ms=1700000000000, seq=4), -1)
    """
    value = value.strip()
    base, sep, version = value.partition(".v")
    cursor = StreamId.parse(base)
    if not sep:
        return cursor, -1
    if not version.isdigit():
        raise ValueError(f"not a racewire SSE id (expected '<ms>-<seq>' or '<ms>-<seq>.v<version>'): {value!r}")
    return cursor, int(version)


@dataclass(slots=True, frozen=True)
class Message:
    """A message for every client of a race, its SSE frame encoded once.

    For ``event``/``commentary`` messages ``cursor`` is the entry's own id; for ``leaderboard``
    messages it is the channel's events cursor when the snapshot went out. A leaderboard may also
    carry a delta against the channel's previous snapshot (version ``base``), for clients that asked
    for deltas and hold exactly that version.
    """

    kind: str
    cursor: StreamId
    version: int
    data: bytes
    frame: bytes
    written_at: float  # monotonic time the channel received it (for lag metrics)
    base: int = -1
    delta: bytes | None = None
    delta_frame: bytes | None = None

    @classmethod
    def event(cls, entry: StreamEntry) -> Message:
        return cls(entry.kind, entry.id, -1, entry.json, encode_frame(entry.kind, str(entry.id), entry.json),
                   time.monotonic())

    @classmethod
    def leaderboard(cls, cursor: StreamId, version: int, data: bytes, base: int = -1,
                    delta: bytes | None = None) -> Message:
        lid = leaderboard_id(cursor, version)
        return cls("leaderboard", cursor, version, data, encode_frame("leaderboard", lid, data), time.monotonic(),
                   base, delta, None if delta is None else encode_frame(DELTA_EVENT, lid, delta))

    def frame_for(self, cursor: StreamId, retry: int | None = None) -> bytes:
        """This leaderboard's frame with another events cursor in its id (a client ahead of the channel)."""
        if cursor == self.cursor and retry is None:
            return self.frame
        return encode_frame("leaderboard", leaderboard_id(cursor, self.version), self.data, retry)

    def delta_for(self, cursor: StreamId) -> bytes:
        """The delta frame (only when ``delta`` is set) with the client's events cursor in its id."""
        assert self.delta is not None and self.delta_frame is not None
        if cursor == self.cursor:
            return self.delta_frame
        return encode_frame(DELTA_EVENT, leaderboard_id(cursor, self.version), self.delta)


def leaderboard_delta(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What changed from one leaderboard document to the next: changed top-level fields, changed row
    fields by driver number, the new order when it changed, and changed car positions.

    >>> a = {"version": 1, "lap": 3, "rows": [{"driver_number": 1, "gap_ms": None, "progress": 2.5},
    ...      {"driver_number": 4, "gap_ms": 800, "progress": 2.4}], "positions": {"1": [0, 0], "4": [5, 5]}}
    >>> b = {"version": 2, "lap": 3, "rows": [{"driver_number": 4, "gap_ms": None, "progress": 2.6},
    ...      {"driver_number": 1, "gap_ms": 100, "progress": 2.55}], "positions": {"1": [1, 0], "4": [5, 5]}}
    >>> d = leaderboard_delta(a, b)
    >>> d["version"], d["base"], d["order"], d["positions"]
    (2, 1, [4, 1], {'1': [1, 0]})
    >>> d["rows"]
    {'4': {'gap_ms': None, 'progress': 2.6}, '1': {'gap_ms': 100, 'progress': 2.55}}
    """
    out: dict[str, Any] = {k: v for k, v in new.items() if k not in _ROWLESS and old.get(k) != v}
    out["version"] = new.get("version")
    out["base"] = old.get("version")
    old_rows = {r.get("driver_number"): r for r in old.get("rows") or []}
    new_rows = new.get("rows") or []
    order = [r.get("driver_number") for r in new_rows]
    if order != [r.get("driver_number") for r in old.get("rows") or []]:
        out["order"] = order
    rows: dict[str, Any] = {}
    for r in new_rows:
        before = old_rows.get(r.get("driver_number"))
        changed = r if before is None else {k: v for k, v in r.items() if before.get(k) != v}
        if changed:
            rows[str(r.get("driver_number"))] = changed
    out["rows"] = rows
    old_pos = old.get("positions") or {}
    out["positions"] = {k: v for k, v in (new.get("positions") or {}).items() if old_pos.get(k) != v}
    gone = [k for k in old_pos if k not in (new.get("positions") or {})]
    if gone:
        out["positions_removed"] = gone
    return out


@dataclass(slots=True)
class SSEEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


@dataclass
class SSEParser:
    """Incremental ``text/event-stream`` parser (the WHATWG algorithm, comments skipped): the inverse
    of :func:`encode_frame`, what an ``EventSource`` does, for Python clients and tests.

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
