"""``racewire feed-server CAPTURE``: a local stand-in for the official live-timing service that
plays a recording back, in real time or N times faster.

It speaks what the service speaks (:mod:`simulator.sources.feed`): ``POST /signalrcore/negotiate``
(sets a load-balancer cookie; the WebSocket must present it), a WebSocket at
``/signalrcore?id=<token>`` (each token opens one connection, once), the JSON hub protocol handshake,
``Subscribe`` answered with the state of the asked topics *at that instant* of the playback, then
every delta as it comes due, as ``feed`` invocations ``[topic, data, timestamp]``, and pings.

It is how the live client is tested without the internet and how a user rehearses against a past
session::

    racewire feed-server ../shared/data/livetiming/recordings/2024_brazil_sprint.txt --port 8765 --speed 20
    racewire live --url http://127.0.0.1:8765 --record /tmp/brazil.txt --until-finished

The playback clock starts at the first subscription (``--start-now`` starts it at once), ``--from
S`` seconds into the capture (a client joining a running session); a later client joins the session
where it is. ``--sent-log PATH`` notes when each delta that completes a lap leaves (``racewire bench
live`` measures from there). ``--drop-at S`` closes every connection when the playback is S
seconds into the capture (repeatable), and makes their tokens void, as a load-balancer restart does;
``--withhold-z`` sends ``CarData.z``/``Position.z`` only to a client that presents a bearer token (the
service's rule since 2025), ``--token`` names the one it accepts.

The protocol's messages are built and parsed by ``pysignalr``'s JSON hub protocol, the library the
live client uses, so both ends share one framing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from pysignalr.messages import CompletionMessage, InvocationMessage, PingMessage
from pysignalr.protocol.json import JSONProtocol
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from simulator.sources.feed import HUB_PATH, TOKEN_TOPICS, Playback, RawRecording, feed_timestamp, read_raw_recording
from simulator.sources.livetiming import LiveTimingError

log = logging.getLogger("racewire.feed_server")

COOKIE = "AWSALBCORS"
"""The load balancer's stickiness cookie, set by negotiate and required on the WebSocket."""
TICK_S = 0.005
PING_EVERY_S = 10.0
PROTOCOL = JSONProtocol()
SEP = PROTOCOL.record_separator


@dataclass(eq=False)
class Connection:
    websocket: WebSocket
    topics: frozenset[str]
    #: frames to send, each with the laps it completes ((car, laps) of TimingData deltas) for --sent-log
    queue: asyncio.Queue[tuple[str, list[tuple[int, int]]] | None] = field(default_factory=lambda: asyncio.Queue())


@dataclass
class Options:
    speed: float = 1.0
    drop_at_s: tuple[float, ...] = ()
    withhold_z: bool = False
    token: str | None = None
    start_now: bool = False
    from_s: float = 0.0
    sent_log: Path | None = None


class FeedServer:
    """The playback and the connections it feeds (one event loop)."""

    def __init__(self, recording: RawRecording, options: Options) -> None:
        self.recording = recording
        self.playback = Playback(recording)
        self.options = options
        self.tokens: dict[str, str] = {}  # unused connection token → the cookie issued with it
        self.connections: set[Connection] = set()
        self.started_at: float | None = None  # monotonic time of capture instant start_ns
        self.drops = sorted(options.drop_at_s)
        self.dropped = 0
        self.subscriptions = 0
        self.sent = 0
        self.sent_log: IO[str] | None = options.sent_log.open("a", encoding="utf-8") if options.sent_log else None
        if options.from_s:  # the session joined at that instant: its state so far is the snapshot
            self.playback.advance(recording.start_ns + int(options.from_s * 1e9))
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ playback
    def capture_ns(self) -> int:
        begin = self.recording.start_ns + int(self.options.from_s * 1e9)
        if self.started_at is None:
            return begin
        return begin + int((time.monotonic() - self.started_at) * self.options.speed * 1e9)

    def subscription_state(self, topics: frozenset[str]) -> dict[str, Any]:
        """What a subscription's completion carries: the state of ``topics`` now, with the
        service's clock now as its ``Heartbeat`` (a recording made topic by topic may have none yet;
        the client reads the service's clock from it)."""
        snapshot = self.playback.snapshot(topics)
        if "Heartbeat" in topics:
            snapshot["Heartbeat"] = {"Utc": feed_timestamp(self.capture_ns())}
        return snapshot

    def start(self) -> None:
        if self.started_at is None:
            self.started_at = time.monotonic()
            log.info("playback starts: %s", {"speed": self.options.speed, "deltas": len(self.recording.deltas)})
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._play(), name="feed-playback")

    async def _play(self) -> None:
        last_ping = time.monotonic()
        while True:
            now_ns = self.capture_ns()
            while self.drops and now_ns - self.recording.start_ns >= self.drops[0] * 1e9:
                self.drops.pop(0)
                self._drop_all()
            due = self.playback.advance(now_ns)
            if due:
                self._fan_out(due)
            if time.monotonic() - last_ping >= PING_EVERY_S:
                last_ping = time.monotonic()
                for conn in self.connections:
                    conn.queue.put_nowait((PROTOCOL.encode(PingMessage()), []))
            if self.playback.finished and not self.drops:
                if due:
                    log.info("playback finished: %s", {"deltas": len(self.recording.deltas)})
                await asyncio.sleep(PING_EVERY_S / 4)
            else:
                await asyncio.sleep(TICK_S)

    def _fan_out(self, due: list[tuple[int, str, Any]]) -> None:
        laps = [(int(car), line["NumberOfLaps"]) for _, topic, data in due if topic == "TimingData"
                for car, line in ((data or {}).get("Lines") or {}).items()
                if isinstance(line, dict) and isinstance(line.get("NumberOfLaps"), int) and car.isdigit()]
        for conn in self.connections:
            frames = [PROTOCOL.encode(InvocationMessage(None, "feed", [topic, data, feed_timestamp(ns)]))
                      for ns, topic, data in due if topic in conn.topics]
            if frames:
                conn.queue.put_nowait(("".join(frames), laps if "TimingData" in conn.topics else []))
                self.sent += len(frames)

    def _drop_all(self) -> None:
        self.dropped += 1
        log.info("dropping every connection: %s", {"connections": len(self.connections), "drop": self.dropped})
        for conn in list(self.connections):
            conn.queue.put_nowait(None)
        self.connections.clear()

    # ------------------------------------------------------------------ protocol
    def negotiate(self, request: Request) -> Response:
        version = int(request.query_params.get("negotiateVersion", "0") or 0)
        auth = request.headers.get("authorization")
        if auth and self.options.token is not None and not self._authorised(auth):
            return JSONResponse({"error": "the bearer token is not valid"}, status_code=401)
        connection_id = secrets.token_urlsafe(16)
        token = secrets.token_urlsafe(16) if version >= 1 else connection_id
        cookie = secrets.token_hex(16)
        self.tokens[token] = cookie
        body: dict[str, Any] = {
            "negotiateVersion": min(version, 1), "connectionId": connection_id,
            "availableTransports": [{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}],
        }
        if version >= 1:
            body["connectionToken"] = token
        response = JSONResponse(body)
        response.set_cookie(COOKIE, cookie, path="/", samesite="none")
        return response

    def _authorised(self, header: str | None) -> bool:
        if not header or not header.lower().startswith("bearer "):
            return False
        token = header[7:].strip()
        return bool(token) and (self.options.token is None or token == self.options.token)

    async def websocket(self, websocket: WebSocket) -> None:
        token = websocket.query_params.get("id", "")
        cookie = self.tokens.pop(token, None)
        if cookie is None:  # unknown, or used already: negotiate again
            await websocket.close(code=1008, reason="unknown or used connection id")
            return
        if websocket.cookies.get(COOKIE) != cookie:
            await websocket.close(code=1008, reason=f"the {COOKIE} cookie from negotiate is missing")
            return
        authorised = self._authorised(websocket.headers.get("authorization"))
        await websocket.accept()
        try:
            handshake = await websocket.receive_text()
            request = orjson.loads(handshake.split(SEP, 1)[0])
            if request.get("protocol") != "json":
                await websocket.send_text(orjson.dumps({"error": "only the json protocol is spoken"}).decode() + SEP)
                await websocket.close()
                return
            await websocket.send_text("{}" + SEP)
            await self._serve(websocket, authorised)
        except (WebSocketDisconnect, RuntimeError):
            pass

    async def _serve(self, websocket: WebSocket, authorised: bool) -> None:
        conn: Connection | None = None
        sender: asyncio.Task[None] | None = None
        try:
            while True:
                raw = await websocket.receive_text()
                for message in PROTOCOL.decode(raw):
                    if not isinstance(message, InvocationMessage) or message.invocation_id is None:
                        continue  # pings, completions, invocations that want no answer
                    if message.target != "Subscribe" or conn is not None:
                        await websocket.send_text(PROTOCOL.encode(CompletionMessage(
                            message.invocation_id, error=f"{message.target}: not served here")))
                        continue
                    topics = frozenset(str(t) for t in (message.arguments or [[]])[0])
                    if self.options.withhold_z and not authorised:
                        topics -= TOKEN_TOPICS
                    self.start()
                    # snapshot and registration with no await between: no delta is lost or sent twice
                    snapshot = self.subscription_state(topics)
                    conn = Connection(websocket, topics)
                    conn.queue.put_nowait((PROTOCOL.encode(CompletionMessage(message.invocation_id, result=snapshot)),
                                           []))
                    self.connections.add(conn)
                    self.subscriptions += 1
                    sender = asyncio.create_task(self._send(conn))
        finally:
            if conn is not None:
                self.connections.discard(conn)
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

    async def _send(self, conn: Connection) -> None:
        while True:
            item = await conn.queue.get()
            if item is None:  # dropped
                with contextlib.suppress(RuntimeError):
                    await conn.websocket.close(code=1012, reason="the service restarts")
                return
            frame, laps = item
            await conn.websocket.send_text(frame)
            if laps and self.sent_log is not None:
                now = time.time_ns()
                self.sent_log.write("".join(f"{now} {car} {n}\n" for car, n in laps))
                self.sent_log.flush()

    def status(self) -> dict[str, Any]:
        return {"capture_s": round((self.capture_ns() - self.recording.start_ns) / 1e9, 3),
                "delivered": self.playback.index, "deltas": len(self.recording.deltas),
                "finished": self.playback.finished, "connections": len(self.connections),
                "subscriptions": self.subscriptions, "drops": self.dropped}


def create_app(recording: RawRecording, options: Options) -> Starlette:
    server = FeedServer(recording, options)

    async def negotiate(request: Request) -> Response:
        return server.negotiate(request)

    async def status(_: Request) -> Response:
        return JSONResponse(server.status())

    async def lifespan(_: Starlette) -> Any:
        if options.start_now:
            server.start()
        yield

    app = Starlette(routes=[
        Route(f"{HUB_PATH}/negotiate", negotiate, methods=["POST"]),
        WebSocketRoute(HUB_PATH, server.websocket),
        Route("/status", status),
    ], lifespan=contextlib.asynccontextmanager(lifespan))
    app.state.feed = server
    return app


# ------------------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("capture", type=Path, help="a recording (<unix-ns>:<topic>:<json> lines, first line init)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--speed", type=float, default=1.0, help="playback speed (1 = real time)")
    parser.add_argument("--drop-at", type=float, action="append", default=[], metavar="S",
                        help="close every connection S seconds into the capture (repeatable)")
    parser.add_argument("--withhold-z", action="store_true",
                        help="send CarData.z/Position.z only to a client that presents a bearer token")
    parser.add_argument("--token", default=None, help="the only bearer token accepted (default: any)")
    parser.add_argument("--start-now", action="store_true",
                        help="start the playback at once (default: at the first subscription)")
    parser.add_argument("--from", dest="from_s", type=float, default=0.0, metavar="S",
                        help="start the playback S seconds into the capture (a client joins a running session)")
    parser.add_argument("--sent-log", type=Path, default=None, metavar="PATH",
                        help="append '<unix-ns> <car> <laps>' when a delta completing a lap leaves (benchmarks)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    if args.speed <= 0:
        print("racewire feed-server: --speed must be positive", flush=True)
        return 2
    try:
        recording = read_raw_recording(args.capture)
    except (OSError, LiveTimingError) as exc:
        print(f"racewire feed-server: {exc}", flush=True)
        return 2
    options = Options(speed=args.speed, drop_at_s=tuple(args.drop_at), withhold_z=args.withhold_z,
                      token=args.token, start_now=args.start_now, from_s=args.from_s, sent_log=args.sent_log)
    app = create_app(recording, options)
    length_s = (recording.end_ns - recording.start_ns) / 1e9
    log.info("feed server for %s: %s", args.capture.name, {
        "url": f"http://{args.host}:{args.port}", "deltas": len(recording.deltas),
        "capture_s": round(length_s, 1), "playback_s": round(length_s / args.speed, 1)})
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, log_level="warning",
                access_log=False, ws_max_size=64 * 1024 * 1024, ws_ping_interval=None)
    return 0
