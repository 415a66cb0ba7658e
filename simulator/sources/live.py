"""The live client of the official live-timing feed: connect, subscribe, hand every message on as
it arrives, and come back after any drop.

One connection is one ``pysignalr`` client (negotiate with the load-balancer cookie kept for the
WebSocket, the JSON hub protocol, pings). ``pysignalr`` reconnects a dropped WebSocket to the same
connection id, which the service does not accept again, and does not subscribe again; so each
connection here is a fresh client, opened by :class:`LiveFeed` with exponential backoff
(``tenacity``), subscribed, and given up at its first close.

What arrives goes to ``on_message(ns, topic, data)`` in order. ``ns`` (unix ns) is the service's
own timestamp of a delta (the ``feed`` invocation's third argument), so that a capture keeps the
session's clock whatever the network or a playback's speed did; a message without one (a snapshot)
is stamped with its arrival time moved by the service's clock offset seen last (before any delta: the
snapshot's ``Heartbeat``, when it is more than :data:`FOREIGN_CLOCK_S` away from ours, as a played
back session is). Stamps never go back. First comes the subscription's snapshot as topic
:data:`~simulator.sources.feed.INIT` (a dict of topic → state; after a reconnection it replaces
what was known: the truth across the gap), then every delta. A
:class:`~simulator.sources.feed.RecordingWriter` given as ``on_message`` keeps a capture that
``racewire livetiming`` replays with the same stamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import CookieJar
from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage, Message
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from dataflows.connectors.producer import ProducerOptions
from schemas.codec import Codec
from schemas.model import InputRecord
from simulator.sources.feed import HUB_PATH, INIT, TOPICS, feed_time_ns, recording_line
from simulator.sources.incremental import IncrementalConverter
from simulator.sources.livetiming import Duplicates, arrival_key, parse_recording
from simulator.sources.produce import produce_stream

log = logging.getLogger("racewire.live")

OnMessage = Callable[[int, str, Any], None]
FOREIGN_CLOCK_S = 60.0
"""A snapshot's heartbeat this far from the local clock is on another clock (a played back session)."""
FINISHED = frozenset({"Finalised", "Ends"})
"""``SessionStatus`` values after which a session sends nothing that changes its result."""


class Dropped(ConnectionError):
    """The connection closed or could not be opened; the next attempt follows a backoff."""


@dataclass
class LiveStats:
    connections: int = 0
    reconnects: int = 0
    messages: int = 0
    snapshots: int = 0
    last_arrival_ns: int | None = None  # local clock
    session: str | None = None
    session_status: str | None = None
    lap: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.session_status in FINISHED


class LiveFeed:
    """Follows the feed at ``base_url`` until ``stop`` is set (or, with ``until_finished``, the
    session is final)."""

    def __init__(self, base_url: str, on_message: OnMessage, *, token: str | None = None,
                 topics: tuple[str, ...] = TOPICS, until_finished: bool = False,
                 backoff_max_s: float = 10.0, connect_timeout_s: int = 10) -> None:
        self.url = base_url.rstrip("/") + HUB_PATH
        self.on_message = on_message
        self.token = token
        self.topics = list(topics)
        self.until_finished = until_finished
        self.backoff_max_s = backoff_max_s
        self.connect_timeout_s = connect_timeout_s
        self.stats = LiveStats()
        self.offset_ns: int | None = None  # the service's clock minus ours, from the latest delta
        self.last_ns = 0
        self.stop = asyncio.Event()

    async def run(self) -> LiveStats:
        retrying = AsyncRetrying(retry=retry_if_exception_type(Dropped), reraise=True,
                                 wait=wait_exponential_jitter(initial=0.2, max=self.backoff_max_s, jitter=0.2),
                                 before_sleep=self._before_retry)
        with contextlib.suppress(asyncio.CancelledError):
            async for attempt in retrying:
                with attempt:
                    await self._connection()
        return self.stats

    def _before_retry(self, state: Any) -> None:
        self.stats.reconnects += 1
        exc = state.outcome.exception() if state.outcome else None
        log.warning("live feed connection lost; reconnecting: %s", {
            "reason": str(exc), "attempt": state.attempt_number, "wait_s": round(state.upcoming_sleep, 2)})

    async def _connection(self) -> None:
        """One connection, from negotiate to its close (raises :class:`Dropped`) or to the stop."""
        if self.stop.is_set():
            return
        # the token as a header from the start: pysignalr's access_token_factory adds it only after
        # the first WebSocket is open (so negotiate and the first upgrade would go without it)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        client = SignalRClient(self.url, headers=headers, connection_timeout=self.connect_timeout_s, retry_count=1)
        # the load balancer's cookie must reach the WebSocket; aiohttp's default jar refuses cookies
        # of a host given by IP address (a local stand-in server), so the jar pysignalr would make
        # is made here (pysignalr 1.3 creates one only when it has none)
        client._transport._cookie_jar = CookieJar(unsafe=True)  # type: ignore[attr-defined]
        closed = asyncio.Event()
        subscribed = asyncio.Event()
        failure: list[str] = []

        async def on_open() -> None:
            self.stats.connections += 1
            # Subscribe's one argument is the list of topics (pysignalr types arguments as dicts)
            await client.send("Subscribe", cast(list[dict[str, Any]], [self.topics]), on_invocation=on_snapshot)

        async def on_snapshot(message: Message) -> None:
            if not isinstance(message, CompletionMessage) or message.error or not isinstance(message.result, dict):
                failure.append(f"Subscribe failed: {getattr(message, 'error', None) or message!r}")
                closed.set()
                return
            self._deliver(INIT, message.result)
            self.stats.snapshots += 1
            subscribed.set()

        async def on_feed(arguments: list[Any]) -> None:
            if subscribed.is_set() and len(arguments) >= 2:
                self._deliver(str(arguments[0]), arguments[1], arguments[2] if len(arguments) > 2 else None)

        async def on_close() -> None:
            closed.set()

        client.on_open(on_open)
        client.on_close(on_close)
        client.on("feed", on_feed)
        task = asyncio.create_task(client.run(), name="live-feed-connection")
        stop = asyncio.create_task(self.stop.wait())
        close = asyncio.create_task(closed.wait())
        try:
            await asyncio.wait({task, stop, close}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, stop, close):
                t.cancel()
            for t in (task, stop, close):
                with contextlib.suppress(BaseException):
                    await t
        if self.stop.is_set():
            return
        if task.done() and not task.cancelled() and task.exception() is not None:
            failure.append(f"{type(task.exception()).__name__}: {task.exception()}")
        raise Dropped("; ".join(failure) or "the connection closed")

    def _deliver(self, topic: str, data: Any, timestamp: Any = None) -> None:
        arrival = time.time_ns()
        ns = self._stamp(arrival, topic, data, timestamp)
        self.stats.messages += 1
        self.stats.last_arrival_ns = arrival
        self._observe(topic, data)
        self.on_message(ns, topic, data)
        if self.until_finished and self.stats.finished:
            self.stop.set()

    def _stamp(self, arrival: int, topic: str, data: Any, timestamp: Any) -> int:
        service = feed_time_ns(timestamp)
        if service is not None:
            self.offset_ns = service - arrival
        else:
            if self.offset_ns is None:
                beat = data.get("Heartbeat") if topic == INIT and isinstance(data, dict) else None
                beat_ns = feed_time_ns(beat.get("Utc")) if isinstance(beat, dict) else None
                foreign = beat_ns is not None and abs(beat_ns - arrival) > FOREIGN_CLOCK_S * 1e9
                self.offset_ns = beat_ns - arrival if foreign and beat_ns is not None else 0
            service = arrival + self.offset_ns
        self.last_ns = max(self.last_ns, service)
        return self.last_ns

    def _observe(self, topic: str, data: Any) -> None:
        parts = data if topic == INIT and isinstance(data, dict) else {topic: data}
        info = parts.get("SessionInfo")
        if isinstance(info, dict) and (info.get("Meeting") or info.get("Name")):
            meeting: dict[str, Any] = info["Meeting"] if isinstance(info.get("Meeting"), dict) else {}
            self.stats.session = " ".join(str(x) for x in (meeting.get("Name"), info.get("Name")) if x)
        status = parts.get("SessionStatus")
        if isinstance(status, dict) and status.get("Status"):
            self.stats.session_status = str(status["Status"])
        lap_count = parts.get("LapCount")
        if isinstance(lap_count, dict) and isinstance(lap_count.get("CurrentLap"), int):
            self.stats.lap = lap_count["CurrentLap"]


class LiveRecords:
    """What arrives → racewire records as soon as each is final → the input topics.

    ``push(ns, topic, data)`` takes a message as the live feed hands it on (the same one the
    recorder writes, parsed the way ``racewire livetiming`` parses the recording, so that the
    records and their ids are the same); records go to a producer in a thread of their own (the
    broker never holds the feed up; while it is away they are spooled). ``close(finished)``: with
    the session over, the records that wait for its end go too.
    """

    def __init__(self, producer_config: dict[str, Any], codec: Codec, options: ProducerOptions | None = None
                 ) -> None:
        self.producer_config, self.codec, self.options = producer_config, codec, options
        self.converter: IncrementalConverter | None = None
        self.duplicates = Duplicates()
        self.records = 0
        self.counts: dict[str, int] = {}
        self.error: BaseException | None = None
        self._queue: queue.Queue[InputRecord | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self, race_id: str) -> None:
        """Records of race ``race_id`` from now on (once, before the first push)."""
        self.converter = IncrementalConverter(race_id)

        def produce() -> None:
            try:
                self.counts = produce_stream(iter(self._queue.get, None), self.producer_config, self.codec,
                                             f"live-{race_id}", self.options)
            except BaseException as exc:  # reported by close()
                self.error = exc

        self._thread = threading.Thread(target=produce, name=f"live-producer-{race_id}", daemon=True)
        self._thread.start()

    def push(self, ns: int, topic: str, data: Any) -> None:
        assert self.converter is not None, "start(race_id) first"
        for m in sorted(parse_recording([recording_line(ns, topic, data)]), key=arrival_key):
            if self.duplicates.fresh(m):
                self._send(self.converter.push(m))

    def _send(self, records: list[InputRecord]) -> None:
        for r in records:
            self._queue.put(r)
        self.records += len(records)

    def close(self, finished: bool) -> dict[str, int]:
        if self._thread is None or self.converter is None:
            return {}
        if finished and self.converter.conv.t0 is not None:
            self._send(self.converter.finish())
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.counts
