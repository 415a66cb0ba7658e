"""One client's stream: the body of one SSE response.

:func:`client_stream` subscribes *before* reading Redis, replays the stream entries after the
client's cursor (its ``Last-Event-ID``), sends the current leaderboard, then relays live messages,
dropping any it has already sent (ids compare as integers), so nothing is lost or sent twice. When
its queue overflowed (:data:`~serving.sse.hub.RESYNC`) it catches up from Redis the same way.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import orjson

from serving.sse.framing import Message, encode_frame, parse_last_event_id
from serving.sse.hub import CLOSED, RESYNC, Hub, RaceChannel
from serving.store import ZERO, StreamId

#: SSE ``retry:`` sent with the first frame: how soon a browser reconnects (ms)
RETRY_MS = 2000
#: replay page size (stream entries per XRANGE)
REPLAY_PAGE = 500


def _version_of(raw: bytes) -> int:
    try:
        return int(orjson.loads(raw).get("version", -1))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return -1


@dataclass(slots=True)
class ClientCursor:
    events: StreamId
    version: int


@dataclass(slots=True, frozen=True)
class StreamHooks:
    """Callbacks of one client stream (metrics)."""

    on_open: Callable[[], None] | None = None
    on_close: Callable[[], None] | None = None
    on_resync: Callable[[], None] | None = None
    on_lag: Callable[[float], None] | None = None  # seconds from the channel reading a message to this client


NO_HOOKS = StreamHooks()


async def client_stream(hub: Hub, race_id: str, last_event_id: str | None, delta: bool = False,
                        hooks: StreamHooks = NO_HOOKS) -> AsyncIterator[bytes]:
    """The body of one SSE response (bytes, already framed).

    With no ``last_event_id`` the client starts at the current end of the events stream: the first
    frame is the current leaderboard. With one, it first gets every events-stream entry after it, in
    order, then the current leaderboard (unless it already has that version), then live messages.
    With ``delta``, a live leaderboard goes out as a ``leaderboard-delta`` whenever the client holds
    exactly the version the delta is based on (else in full).
    """
    if last_event_id:
        cursor, version = parse_last_event_id(last_event_id)
        fresh = False
    else:
        cursor, version = ZERO, -1
        fresh = True
    channel, sub = await hub.subscribe(race_id)
    on_lag = hooks.on_lag
    if hooks.on_open is not None:
        hooks.on_open()
    try:
        if fresh:
            cursor = await hub.store.last_event_id(race_id)
        pos = ClientCursor(cursor, version)
        first = True
        # a fresh client starts at the current end: what comes later reaches it through the channel
        async for chunk in _catch_up(hub, channel, race_id, pos, retry=RETRY_MS, replay=not fresh):
            first = False
            yield chunk
        if first:  # nothing to send yet (no snapshot, no missed events): still tell the retry delay
            yield b"retry: %d\r\n\r\n" % RETRY_MS
        while True:
            items = await sub.get_all()
            if on_lag is not None and isinstance(items[0], Message):  # channel receipt -> this client's turn
                on_lag(time.monotonic() - items[0].written_at)
            out: list[bytes] = []
            for item in items:
                if item is CLOSED:
                    if out:
                        yield b"".join(out)
                    return
                if item is RESYNC:
                    if out:
                        yield b"".join(out)
                        out = []
                    if hooks.on_resync is not None:
                        hooks.on_resync()
                    async for chunk in _catch_up(hub, channel, race_id, pos):
                        yield chunk
                    continue
                msg: Message = item
                if msg.kind == "leaderboard":
                    if msg.version <= pos.version:
                        continue
                    if delta and msg.delta is not None and msg.base == pos.version:
                        out.append(msg.delta_for(pos.events))
                    else:
                        out.append(msg.frame_for(pos.events))
                    pos.version = msg.version
                else:
                    if msg.cursor <= pos.events:
                        continue
                    pos.events = msg.cursor
                    out.append(msg.frame)
            if out:
                yield b"".join(out)
    finally:
        hub.unsubscribe(channel, sub)
        if hooks.on_close is not None:
            hooks.on_close()


async def _catch_up(hub: Hub, channel: RaceChannel, race_id: str, pos: ClientCursor,
                    retry: int | None = None, replay: bool = True) -> AsyncIterator[bytes]:
    """Everything in Redis after ``pos``: missed stream entries, then the current leaderboard."""
    store = hub.store
    gap = await store.trimmed_after(race_id, pos.events) if replay else None
    if gap is not None:
        note = orjson.dumps({"race_id": race_id, "reason": "trimmed", "oldest_available": str(gap),
                             "message": "some events after your last id were trimmed from the capped stream"})
        yield encode_frame("gap", str(pos.events), note, retry)
        retry = None
    while replay:
        entries = await store.events_after(race_id, pos.events, REPLAY_PAGE)
        if not entries:
            break
        frames = []
        for entry in entries:
            frames.append(encode_frame(entry.kind, str(entry.id), entry.json, retry))
            retry = None
        pos.events = entries[-1].id
        yield b"".join(frames)
        if len(entries) < REPLAY_PAGE:
            break
    latest = channel.latest
    if latest is None:
        latest = await channel.refresh()
    elif await store.version(race_id) > latest.version:  # the channel has not seen the newest one yet
        raw = await store.state_raw(race_id)
        if raw is not None and _version_of(raw) > latest.version:
            latest = Message.leaderboard(pos.events, _version_of(raw), raw)
    if latest is not None and latest.version > pos.version:
        pos.version = latest.version
        yield latest.frame_for(pos.events, retry)
