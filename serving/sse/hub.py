"""Live fan-out: one Redis reader per race per process, many subscribers.

:class:`Hub` (one per process) owns one :class:`RaceChannel` per race that has clients. A channel
runs one task that ``XREAD BLOCK``\\s ``race:{id}:events`` and ``race:{id}:updates``, turns each
entry into a :class:`~serving.sse.framing.Message` whose SSE frame is encoded once, and appends it
to every :class:`Subscriber`'s bounded queue without awaiting, so a slow client never slows the
reader or the others. A subscriber whose queue overflows holds a single :data:`RESYNC` marker
instead: its client catches up from Redis (:mod:`serving.sse.client`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from schemas.redis_layout import events_key, updates_key
from serving.sse.framing import Message, leaderboard_delta
from serving.store import ZERO, RaceStore, StreamEntry, StreamId

log = logging.getLogger("racewire.serving.sse")

#: how long stopping a channel waits for its reader beyond one blocking read
STOP_TIMEOUT_S = 1.0
#: the slowest the fan-out budget may thin telemetry-only leaderboards to (one per this many seconds)
MAX_TELEMETRY_INTERVAL_S = 2.0
#: a held telemetry snapshot goes out this long after its interval ends unless a newer one came first
#: (a little more than the dataflow's 250 ms between telemetry snapshots)
TRAILING_GRACE_S = 0.3
#: event ids a channel remembers having broadcast: an event written again under a new stream id (a
#: race restored after Redis lost it) is not sent twice
SEEN_EVENT_IDS = 5000


class _Resync:
    """Queue marker: the subscriber overflowed and must resynchronise from Redis."""


RESYNC = _Resync()
CLOSED = object()  # queue marker: the hub shut down, the client stream ends


class Subscriber:
    """A bounded queue of messages for one client. ``put`` never blocks; on overflow the queue is
    emptied and replaced by a single :data:`RESYNC` marker."""

    __slots__ = ("_waiter", "closed", "items", "maxlen", "overflows", "race_id")

    def __init__(self, race_id: str, maxlen: int) -> None:
        self.race_id = race_id
        self.maxlen = maxlen
        self.items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.overflows = 0
        self.closed = False

    def put(self, item: Any) -> bool:
        """Append an item; False when the queue overflowed (the client will resync)."""
        items = self.items
        ok = True
        if len(items) >= self.maxlen:
            items.clear()
            items.append(RESYNC)
            self.overflows += 1
            ok = False
        elif not items or items[0] is not RESYNC:
            items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return ok

    def close(self) -> None:
        self.closed = True
        self.items.append(CLOSED)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get_all(self) -> list[Any]:
        """Wait for at least one item; return (and remove) everything queued."""
        while not self.items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        out = list(self.items)
        self.items.clear()
        return out


class RaceChannel:
    """One race's reader task and its subscribers."""

    def __init__(self, hub: Hub, race_id: str) -> None:
        self.hub = hub
        self.race_id = race_id
        self.subscribers: set[Subscriber] = set()
        self.events_cursor = ZERO
        self.updates_cursor = ZERO
        self.version = -1
        self.doc: dict[str, Any] | None = None  # the last leaderboard document sent, parsed (for deltas)
        self.latest: Message | None = None
        self.sent_at = 0.0  # loop time of the last leaderboard sent
        self.pending: tuple[bytes, dict[str, Any], int] | None = None  # a thinned snapshot not sent yet
        self.trailing: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.stopping = False
        self.ready = asyncio.Event()
        self.linger: asyncio.TimerHandle | None = None
        self._events_key = events_key(race_id)
        self._updates_key = updates_key(race_id)
        self.seen: dict[bytes, None] = {}  # event ids broadcast lately, oldest first

    async def start(self) -> None:
        """Take the current ends of both streams as the starting cursors, then start reading."""
        store = self.hub.store
        self.events_cursor = await store.last_event_id(self.race_id)
        last = await store.client.xrevrange(self._updates_key, "+", "-", count=1)
        self.updates_cursor = StreamId.parse(last[0][0]) if last else ZERO
        self.task = asyncio.create_task(self._run(), name=f"sse-reader-{self.race_id}")
        self.ready.set()

    def broadcast(self, msg: Message) -> None:
        dropped = 0
        for sub in self.subscribers:
            if not sub.put(msg):
                dropped += 1
        self.hub.on_broadcast(msg, len(self.subscribers), dropped)

    async def _run(self) -> None:
        client: Any = self.hub.store.client
        backoff = 0.1
        while not self.stopping:
            try:
                resp = await client.xread({self._events_key: str(self.events_cursor),
                                           self._updates_key: str(self.updates_cursor)},
                                          count=self.hub.read_count, block=self.hub.block_ms)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                if self.stopping:
                    return
                log.warning("race %s: Redis read failed (%s); retrying in %.1f s", self.race_id, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if resp and not self.stopping:
                await self._handle(resp)

    async def _handle(self, resp: Any) -> None:
        updated = False
        for stream, entries in _as_pairs(resp):
            name = stream.decode() if isinstance(stream, bytes) else str(stream)
            if name == self._events_key:
                for entry_id, fields in entries:
                    entry = StreamEntry.from_redis(entry_id, fields)
                    self.events_cursor = entry.id
                    event_id = fields.get(b"event_id")
                    if event_id is not None:
                        if event_id in self.seen:
                            continue
                        self.seen[event_id] = None
                        if len(self.seen) > SEEN_EVENT_IDS:
                            del self.seen[next(iter(self.seen))]
                    self.broadcast(Message.event(entry))
            elif entries:
                self.updates_cursor = StreamId.parse(entries[-1][0])
                updated = True
        if updated:  # many updates in one read coalesce into the newest snapshot
            await self.refresh()

    async def refresh(self) -> Message | None:
        """Read the current snapshot; broadcast it (with its delta from the last one sent) if newer.

        Under load, snapshots that only moved cars (``reason == "telemetry"``) are thinned: at most one
        per ``Hub.telemetry_interval`` (leading edge: the first arrival after the interval goes out at
        once; trailing edge: when arrivals stop, the newest held one goes out shortly after the interval
        ends, so the final state is never held back), keeping the work per second within the fan-out
        budget. Snapshots from the timing line always go out at once."""
        raw = await self.hub.store.state_raw(self.race_id)
        if raw is None:
            return self.latest
        try:
            doc = orjson.loads(raw)
            version = int(doc.get("version", -1))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            log.warning("race %s: unreadable leaderboard document in Redis", self.race_id)
            return self.latest
        if version <= self.version:
            return self.latest
        loop = asyncio.get_running_loop()
        if doc.get("reason") == "telemetry" and self.latest is not None:
            interval = self.hub.telemetry_interval(len(self.subscribers))
            due = self.sent_at + interval
            now = loop.time()
            if now < due:
                # held: the next arrival after `due` goes out at once (fresher than this one); only when
                # arrivals stop does the newest held one go out, a moment after `due`
                self.pending = (raw, doc, version)
                if self.trailing is not None:
                    self.trailing.cancel()
                self.trailing = loop.call_at(max(due, now) + TRAILING_GRACE_S, self._flush_pending)
                return self.latest
        self._send(raw, doc, version)
        return self.latest

    def _send(self, raw: bytes, doc: dict[str, Any], version: int) -> None:
        prev, self.version, self.doc = self.doc, version, doc
        self.pending = None
        if self.trailing is not None:
            self.trailing.cancel()
            self.trailing = None
        self.sent_at = asyncio.get_running_loop().time()
        delta = None if prev is None else orjson.dumps(leaderboard_delta(prev, doc))
        self.latest = Message.leaderboard(self.events_cursor, version, raw,
                                          -1 if prev is None else int(prev.get("version", -1)), delta)
        self.broadcast(self.latest)

    def _flush_pending(self) -> None:
        self.trailing = None
        pending = self.pending
        if pending is not None and pending[2] > self.version and not self.stopping:
            self._send(*pending)

    async def stop(self) -> None:
        """End the reader: it exits when its current ``XREAD BLOCK`` returns (within ``block_ms``).
        It is not cancelled mid-read: redis-py's asyncio client can leave a cancelled blocking read
        hanging on its connection, so cancelling is only the last resort."""
        self.stopping = True
        if self.task is not None:
            done, _ = await asyncio.wait({self.task}, timeout=self.hub.block_ms / 1000 + STOP_TIMEOUT_S)
            if not done:
                log.warning("race %s: the Redis reader did not stop in time; cancelling it", self.race_id)
                self.task.cancel()
        for sub in list(self.subscribers):
            sub.close()


def _as_pairs(resp: Any) -> list[tuple[Any, Any]]:
    # redis-py returns a list of [stream, entries] (RESP2) or a dict (RESP3)
    if isinstance(resp, dict):
        return list(resp.items())
    return [(s, e) for s, e in resp]


class Hub:
    """All channels of one process. Create one in the app's lifespan; :meth:`close` at shutdown."""

    def __init__(self, client: aioredis.Redis, *, queue_size: int = 256, block_ms: int = 1000,
                 read_count: int = 1000, linger_s: float = 10.0, fanout_budget_per_s: float = 0.0,
                 on_broadcast: Callable[[Message, int, int], None] | None = None) -> None:
        self.store = RaceStore(client)
        self.queue_size = queue_size
        self.block_ms = block_ms
        self.read_count = read_count
        self.linger_s = linger_s
        self.fanout_budget_per_s = fanout_budget_per_s
        self.channels: dict[str, RaceChannel] = {}
        self.closed = False
        self._on_broadcast = on_broadcast

    def on_broadcast(self, msg: Message, receivers: int, dropped: int) -> None:
        if self._on_broadcast is not None:
            self._on_broadcast(msg, receivers, dropped)

    def telemetry_interval(self, subscribers: int) -> float:
        """Least time between telemetry-only snapshots of one race: each goes to every subscriber, so
        ``subscribers / budget`` keeps the deliveries per second within the budget (0: no limit).
        The budget is per process, so all races' subscribers count."""
        budget = self.fanout_budget_per_s
        if budget <= 0:
            return 0.0
        total = sum(len(c.subscribers) for c in self.channels.values()) or subscribers
        return min(MAX_TELEMETRY_INTERVAL_S, total / budget)

    @property
    def clients(self) -> int:
        return sum(len(c.subscribers) for c in self.channels.values())

    async def subscribe(self, race_id: str) -> tuple[RaceChannel, Subscriber]:
        """Register a subscriber; once this returns, every entry added to the race's streams after the
        channel's cursors reaches its queue."""
        if self.closed:
            raise RuntimeError("the SSE hub is shut down")
        channel = self.channels.get(race_id)
        sub = Subscriber(race_id, self.queue_size)
        if channel is None:
            channel = RaceChannel(self, race_id)
            self.channels[race_id] = channel
            channel.subscribers.add(sub)
            try:
                await channel.start()
            except BaseException:
                channel.subscribers.discard(sub)
                if self.channels.get(race_id) is channel:
                    del self.channels[race_id]
                channel.ready.set()
                raise
        else:
            channel.subscribers.add(sub)
            if channel.linger is not None:
                channel.linger.cancel()
                channel.linger = None
            await channel.ready.wait()
            if channel.task is None:  # its start failed meanwhile
                channel.subscribers.discard(sub)
                raise ConnectionError(f"could not start reading race {race_id!r} from Redis")
        return channel, sub

    def unsubscribe(self, channel: RaceChannel, sub: Subscriber) -> None:
        channel.subscribers.discard(sub)
        if not channel.subscribers and not self.closed and channel.linger is None:
            loop = asyncio.get_running_loop()
            channel.linger = loop.call_later(self.linger_s, self._drop_if_idle, channel)

    def _drop_if_idle(self, channel: RaceChannel) -> None:
        channel.linger = None
        if not channel.subscribers and self.channels.get(channel.race_id) is channel:
            del self.channels[channel.race_id]
            asyncio.get_running_loop().create_task(channel.stop())

    async def close(self) -> None:
        """Stop every reader and end every client stream."""
        self.closed = True
        channels = list(self.channels.values())
        self.channels.clear()
        for channel in channels:
            if channel.linger is not None:
                channel.linger.cancel()
        await asyncio.gather(*(c.stop() for c in channels), return_exceptions=True)
