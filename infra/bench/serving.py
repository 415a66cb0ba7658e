"""Serving benchmarks (``racewire bench sse`` and ``racewire bench latency``); both print JSON.

``sse``: N concurrent SSE clients on one serving process (uvicorn in a subprocess) while a simulated
race's real dataflow output (``serving.replay``) is written to Redis at real time (``--speed``).
Measured per message and client: time from the write to Redis returning to the client receiving the
message's id. ``lost`` counts events a client never got plus clients that missed the last snapshot.
The clients are raw asyncio protocols in this process (one core); the server has the other core.

``latency``: ``--races`` simulated races produced to the broker at real time (``--speed 1``), the race
dataflow (``racewire flow race``) and serving as subprocesses, one SSE client per race. For every lap
completion: time from producing the lap record to the broker to the client receiving a leaderboard
whose row for that car shows the lap.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import subprocess
import sys
import time
import uuid
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from infra.bench.harness import percentile, redis_service, services, status_mb

log = logging.getLogger("racewire.bench.serving")

CONNECT_WAVE = 250
SERVER_START_TIMEOUT_S = 30.0


def add_subcommands(sub: Any) -> None:
    p = sub.add_parser("sse", help="fan-out: N concurrent SSE clients on one serving process")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of race written while clients listen")
    p.add_argument("--speed", type=float, default=1.0, help="race replay speed (1 = real time)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", type=float, default=85.0,
                   help="race time (s) the clients join at (default 85: the first lap completions follow)")
    p.add_argument("--queue", type=int, default=None, help="server's per-client queue (default: its default)")
    p.add_argument("--budget", type=float, default=None,
                   help="server's fan-out budget (deliveries/s; 0 = never thin telemetry-only leaderboards)")
    p.add_argument("--full", action="store_true",
                   help="full leaderboard snapshots (default: deltas, as the web page asks for)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--debug", action="store_true", help="log each written key's delivery latency (p50, max)")
    p.set_defaults(bench_func=bench_sse)

    p = sub.add_parser("latency", help="record produced to Kafka -> SSE client has the updated leaderboard")
    p.add_argument("--races", type=int, default=10)
    p.add_argument("--laps", type=int, default=2)
    p.add_argument("--speed", type=float, default=1.0, help="1 = real time")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=1, help="dataflow workers")
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.set_defaults(bench_func=bench_latency)


# ------------------------------------------------------------------------------------------ shared


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@contextlib.contextmanager
def serving_process(redis_url: str, extra_args: list[str] | None = None,
                    env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m infra.serve_cli`` on a free port; yields the process and the port once healthy."""
    import httpx

    from infra.services import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "infra.serve_cli", "--log-level", "WARNING", "--port", str(port), "--rate-limit", "0",
           *(extra_args or [])]
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {}), "RACEWIRE_REDIS_URL": redis_url},
                            stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the serving process exited with code {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the serving process did not become healthy in time")
            time.sleep(0.1)
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------ SSE client


def _key(raw: bytes) -> int:
    """SSE id → int key: ``-version`` for leaderboards (``…vN``), ``ms * 100000 + seq`` for entries."""
    text = raw.decode("ascii", "replace")
    base, sep, version = text.partition(".v")
    if sep:
        return -int(version)
    ms, _, seq = base.partition("-")
    return int(ms) * 100_000 + int(seq or 0)


class SSEClient(asyncio.Protocol):
    """A minimal SSE reader: records (id key, receive time) for every message; nothing else is parsed."""

    __slots__ = ("closed", "keys", "request", "status", "tail", "times", "transport")

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.keys = array("q")
        self.times = array("d")
        self.tail = b""
        self.status: int | None = None
        self.closed = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.tail + data if self.tail else data
        if self.status is None:
            if not buf.startswith(b"HTTP/1.1 "):
                self.tail = buf
                return
            self.status = int(buf[9:12])
        done = 0
        i = buf.find(b"\nid: ")
        while i >= 0:
            j = buf.find(b"\r", i + 5)
            if j < 0:
                break
            self.keys.append(_key(buf[i + 5:j]))
            self.times.append(now)
            done = j
            i = buf.find(b"\nid: ", j)
        start = i if i >= 0 else max(done, len(buf) - 4)
        self.tail = buf[start:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


# ------------------------------------------------------------------------------------------ bench sse


def _server_lag(port: int) -> dict[str, float | None]:
    """Quantiles (bucket upper bounds, ms) of the server's fan-out lag histogram, from /metrics."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith("racewire_sse_fanout_lag_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0.0
    out: dict[str, float | None] = {}
    for q in (50, 99):
        bound = next((le for le, n in buckets if total and n >= total * q / 100), None)
        out[f"p{q}_le"] = None if bound is None else round(bound * 1000, 1)
    return out


def bench_sse(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    limit = raise_fd_limit()
    if limit < args.clients + 100:
        raise SystemExit(f"bench sse: the open-file limit ({limit}) is too low for {args.clients} clients; "
                         "raise it (ulimit -n)")
    import gc

    gc.collect()
    gc.freeze()  # the clients' own collections must not show up as server latency
    gc.set_threshold(50_000, 50, 1000)
    with tempfile.TemporaryDirectory(prefix="racewire-bench-sse-") as tmp, redis_service(Path(tmp)) as redis_url:
        return asyncio.run(_bench_sse(args, redis_url))


async def _bench_sse(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    import redis

    from dataflows.connectors.redis_sink import RedisWriter
    from schemas.redis_layout import RACES_KEY, BoardUpdate, events_key
    from serving.replay import race_outputs, write_session
    from serving.store import StreamId

    race_id = f"bench-sse-{uuid.uuid4().hex[:6]}"
    laps = max(3, int((args.start + args.duration * args.speed) / 80) + 2)
    session, outputs = race_outputs(race_id, args.seed, laps=laps)
    first = next(i for i, o in enumerate(outputs)
                 if isinstance(o.item, BoardUpdate) and o.ts_ms >= args.start * 1000)
    writer = RedisWriter(redis_url)
    write_session(writer, session)
    writer.write([o.item for o in outputs[: first + 1]])
    client: Any = redis.Redis.from_url(redis_url)
    extra = ["--ping", "15"] + (["--sse-queue", str(args.queue)] if args.queue else []) + (
        ["--fanout-budget", str(args.budget)] if args.budget is not None else [])
    loop = asyncio.get_running_loop()
    try:
        with serving_process(redis_url, extra) as (proc, port):
            await asyncio.sleep(0.5)
            rss_idle = status_mb(proc.pid, "VmRSS")
            query = "" if args.full else "?delta=1"
            request = (f"GET /api/races/{race_id}/stream{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                       "Accept: text/event-stream\r\n\r\n").encode()
            clients: list[SSEClient] = []
            t_connect = time.perf_counter()
            failed_connects = 0
            for wave in range(0, args.clients, CONNECT_WAVE):
                n = min(CONNECT_WAVE, args.clients - wave)
                results = await asyncio.gather(
                    *(loop.create_connection(lambda: SSEClient(request), "127.0.0.1", port) for _ in range(n)),
                    return_exceptions=True)
                for r in results:
                    if isinstance(r, BaseException):
                        failed_connects += 1
                        if failed_connects == 1:
                            log.warning("connect failed: %r", r)
                    else:
                        clients.append(r[1])
                await asyncio.sleep(0.05)
            deadline = time.perf_counter() + 60
            while sum(1 for c in clients if len(c.keys)) < len(clients) and time.perf_counter() < deadline:
                await asyncio.sleep(0.1)
            connected = sum(1 for c in clients if len(c.keys) and c.status == 200)
            connect_s = time.perf_counter() - t_connect
            await asyncio.sleep(1.0)
            rss_clients = status_mb(proc.pid, "VmRSS")
            log.info("%d/%d clients connected in %.1f s; server RSS %.0f MB (idle %.0f MB)", connected,
                     args.clients, connect_s, rss_clients, rss_idle)
            baseline = [len(c.keys) for c in clients]

            written: dict[int, float] = {}  # key -> time the write returned
            stats = {"boards": 0, "events": 0}

            def write_race() -> None:
                tail = client.xrevrange(events_key(race_id), "+", "-", count=1)
                last_entry = tail[0][0].decode() if tail else "0-0"
                t0 = time.perf_counter()
                base = outputs[first + 1].ts_ms
                i = first + 1
                while i < len(outputs) and time.perf_counter() - t0 < args.duration:
                    j = i
                    while j < len(outputs) and outputs[j].ts_ms == outputs[i].ts_ms:
                        j += 1
                    delay = (outputs[i].ts_ms - base) / 1000 / args.speed - (time.perf_counter() - t0)
                    if delay > 0:
                        time.sleep(delay)
                    batch = [o.item for o in outputs[i:j]]
                    writer.write(batch)
                    now = time.perf_counter()
                    boards = [b.board.version for b in batch if isinstance(b, BoardUpdate)]
                    if boards:
                        written[-max(boards)] = now
                        stats["boards"] += 1
                    if len(boards) < len(batch):
                        for entry_id, _ in client.xrange(events_key(race_id), f"({last_entry}", "+"):
                            sid = StreamId.parse(entry_id)
                            written[sid.ms * 100_000 + sid.seq] = now
                            last_entry = str(sid)
                            stats["events"] += 1
                    i = j

            import psutil

            server_ps, me = psutil.Process(proc.pid), psutil.Process()
            cpu0 = (sum(server_ps.cpu_times()[:2]), sum(me.cpu_times()[:2]))
            t_write = time.perf_counter()
            await asyncio.to_thread(write_race)
            write_s = time.perf_counter() - t_write
            cpu1 = (sum(server_ps.cpu_times()[:2]), sum(me.cpu_times()[:2]))
            final_key = min(k for k in written if k < 0) if any(k < 0 for k in written) else None
            drain_deadline = time.perf_counter() + 15
            while time.perf_counter() < drain_deadline:
                if final_key is None or all(final_key in c.keys[-5:] or c.closed for c in clients):
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            peak_rss = status_mb(proc.pid, "VmHWM")
            lag = await asyncio.to_thread(_server_lag, port)
            for c in clients:
                if c.transport is not None:
                    c.transport.close()
    finally:
        with contextlib.suppress(Exception):
            keys = list(client.scan_iter(match=f"*{race_id}*", count=1000))
            if keys:
                client.delete(*keys)
            client.hdel(RACES_KEY, race_id)
        client.close()
        writer.close()

    if args.debug:
        per: dict[int, list[float]] = {}
        for c, skip in zip(clients, baseline, strict=True):
            for k, t in zip(c.keys[skip:], c.times[skip:], strict=True):
                if k in written:
                    per.setdefault(k, []).append((t - written[k]) * 1000)
        t_first = min(written.values())
        for k in sorted(per, key=lambda k: written[k]):
            v = per[k]
            log.warning("t=%6.2f key=%s n=%d p50=%.0f max=%.0f", written[k] - t_first, k, len(v),
                        percentile(v, 50) or 0, max(v))
    event_keys = {k for k in written if k >= 0}
    latencies: list[float] = []
    delivered = lost = 0
    for c, skip in zip(clients, baseline, strict=True):
        got_events = set()
        got_final = False
        for k, t in zip(c.keys[skip:], c.times[skip:], strict=True):
            w = written.get(k)
            if w is not None:
                latencies.append((t - w) * 1000)
                delivered += 1
            if k >= 0:
                got_events.add(k)
            elif k == final_key:
                got_final = True
        lost += len(event_keys - got_events) + (0 if got_final or final_key is None else 1)
    lost += (args.clients - connected) * (len(event_keys) + 1)
    return {
        "benchmark": "sse", "mode": "full" if args.full else "delta", "clients": args.clients,
        "connected": connected, "failed_connects": failed_connects,
        "connect_s": round(connect_s, 1), "duration_s": round(write_s, 1), "speed": args.speed,
        "race_start_s": args.start,
        "leaderboards_written": stats["boards"], "events_written": stats["events"],
        "leaderboards_per_client": round(sum(1 for c, skip in zip(clients, baseline, strict=True)
                                             for k in c.keys[skip:] if k < 0) / max(1, connected), 1),
        "delivered": delivered, "lost": lost,
        "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
        "max_ms": round(max(latencies), 1) if latencies else None,
        "server_cpu_pct": round((cpu1[0] - cpu0[0]) / write_s * 100), "clients_cpu_pct": round(
            (cpu1[1] - cpu0[1]) / write_s * 100),
        "server_fanout_lag_ms": lag,
        "server_rss_idle_mb": round(rss_idle, 1), "server_rss_connected_mb": round(rss_clients, 1),
        "rss_per_client_kb": round((rss_clients - rss_idle) * 1024 / max(1, connected), 1),
        "peak_rss_mb": round(peak_rss, 1), "cpus": os.cpu_count(), "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }


# ------------------------------------------------------------------------------------------ bench latency


class BoardWatcher(asyncio.Protocol):
    """One SSE client of one race: for each leaderboard, which (driver, laps) it shows for the first
    time, and when (``clock``: ``time.perf_counter`` within one process, ``time.time`` across them)."""

    def __init__(self, request: bytes, seen: dict[tuple[str, int, int], float], race_id: str,
                 clock: Any = time.perf_counter) -> None:
        self.clock = clock
        self.request = request
        self.seen = seen
        self.race_id = race_id
        self.buf = b""
        self.laps: dict[int, int] = {}
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        import orjson

        now = self.clock()
        self.buf += data
        while True:
            i = self.buf.find(b"\nevent: leaderboard\r\ndata: ")
            if i < 0:
                self.buf = self.buf[-64:]
                return
            j = self.buf.find(b"\r\n", i + 27)
            if j < 0:
                self.buf = self.buf[i:]
                return
            doc = orjson.loads(self.buf[i + 27:j])
            self.buf = self.buf[j:]
            for row in doc.get("rows", []):
                n, laps = int(row["driver_number"]), int(row["laps"])
                if laps > self.laps.get(n, 0):
                    for lap in range(self.laps.get(n, 0) + 1, laps + 1):
                        self.seen.setdefault((self.race_id, n, lap), now)
                    self.laps[n] = laps

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


async def _watch_redis(redis_url: str, race_ids: list[str], in_redis: dict[tuple[str, int, int], float],
                       stop: asyncio.Event) -> None:
    """Like serving's reader, but straight from Redis: when each (driver, lap) first shows in a race's state.
    Splits the end-to-end figure into dataflow (produce -> Redis) and serving (Redis -> client)."""
    import orjson
    import redis.asyncio as aioredis

    from schemas.redis_layout import state_key, updates_key

    client: Any = aioredis.Redis.from_url(redis_url)
    cursors = {updates_key(r): "0-0" for r in race_ids}
    race_of = {updates_key(r): r for r in race_ids}
    laps: dict[tuple[str, int], int] = {}
    try:
        while not stop.is_set():
            resp = await client.xread(cursors, block=200)
            now = time.perf_counter()
            for stream, entries in resp or []:
                key = stream.decode()
                cursors[key] = entries[-1][0].decode()
                race = race_of[key]
                raw = await client.get(state_key(race))
                for row in orjson.loads(raw).get("rows", []) if raw else []:
                    n, done = int(row["driver_number"]), int(row["laps"])
                    for lap in range(laps.get((race, n), 0) + 1, done + 1):
                        in_redis.setdefault((race, n, lap), now)
                    laps[(race, n)] = max(done, laps.get((race, n), 0))
    finally:
        await client.aclose()


def bench_latency(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="racewire-bench-latency-") as tmp:
        return asyncio.run(_bench_latency(args, Path(tmp)))


async def _bench_latency(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import psutil
    import redis

    from infra.flow_cli import flow_process
    from infra.topics import create_topics
    from schemas.codec import Codec, make_registry_client
    from schemas.model import Lap
    from schemas.redis_layout import RACES_KEY
    from schemas.settings import load_settings
    from simulator.sources.produce import produce_many
    from simulator.sources.synthetic import SyntheticRace

    tag = uuid.uuid4().hex[:6]
    sims = [SyntheticRace(f"lat-{tag}-{i}", args.seed + i, args.laps) for i in range(args.races)]
    produced: dict[tuple[str, int, int], float] = {}
    seen: dict[tuple[str, int, int], float] = {}
    in_redis: dict[tuple[str, int, int], float] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with services(workdir) as svc:
        create_topics(svc["bootstrap"], partitions=4)
        codec = Codec(make_registry_client(svc["registry_url"]))
        codec.register_all()
        env = {**os.environ, "RACEWIRE_KAFKA_BOOTSTRAP": svc["bootstrap"], "RACEWIRE_REDIS_URL": svc["redis_url"],
               "RACEWIRE_SCHEMA_REGISTRY_URL": svc["registry_url"]}
        flows = contextlib.ExitStack()
        flow = flows.enter_context(flow_process(svc["bootstrap"], svc["redis_url"], svc["registry_url"], args.workers,
                                                load_settings().database_url))
        rclient: Any = redis.Redis.from_url(svc["redis_url"])
        try:
            with serving_process(svc["redis_url"], env=env) as (server, port):
                def on_record(record: Any) -> None:
                    if isinstance(record, Lap):
                        produced[(record.race_id, record.driver_number, record.lap)] = time.perf_counter()

                t0 = time.perf_counter()
                producing = asyncio.create_task(asyncio.to_thread(
                    produce_many, sims, {"bootstrap.servers": svc["bootstrap"], "linger.ms": 5}, codec, args.speed,
                    "", on_record))
                # the stream 404s until the race exists: attach one client per race as soon as it does
                # (the first lap completes about 90 s of race time later)
                deadline = time.monotonic() + 60
                while not all(rclient.hexists(RACES_KEY, s.race_id) for s in sims):
                    if time.monotonic() > deadline or producing.done():
                        raise RuntimeError("the dataflow did not publish the races within 60 s")
                    await asyncio.sleep(0.1)
                for s in sims:
                    req = (f"GET /api/races/{s.race_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").encode()
                    watcher = BoardWatcher(req, seen, s.race_id)
                    await loop.create_connection(lambda w=watcher: w, "127.0.0.1", port)  # type: ignore[misc]
                if produced:
                    raise RuntimeError("clients attached after the first lap completion; results would be partial")
                redis_watch = asyncio.create_task(_watch_redis(svc["redis_url"], [s.race_id for s in sims], in_redis,
                                                               stop))
                await producing
                produce_s = time.perf_counter() - t0
                deadline = time.monotonic() + 10
                while len(seen) < len(produced) and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                stop.set()
                await redis_watch
                peak = {"serving": status_mb(server.pid, "VmHWM"),
                        "dataflow": sum(status_mb(p.pid, "VmHWM")
                                        for p in [psutil.Process(flow.pid), *psutil.Process(flow.pid).children(True)])}
        finally:
            flows.close()
            for s in sims:
                with contextlib.suppress(Exception):
                    keys = list(rclient.scan_iter(match=f"*{s.race_id}*", count=1000))
                    if keys:
                        rclient.delete(*keys)
                    rclient.hdel(RACES_KEY, s.race_id)
            rclient.close()

    latencies = [(seen[k] - t) * 1000 for k, t in produced.items() if k in seen]
    to_redis = [(in_redis[k] - t) * 1000 for k, t in produced.items() if k in in_redis]
    redis_to_client = [(seen[k] - in_redis[k]) * 1000 for k in seen if k in in_redis]
    return {
        "benchmark": "latency", "races": args.races, "laps": args.laps, "speed": args.speed,
        "samples": len(latencies), "missing": len(produced) - len(latencies),
        "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
        "max_ms": round(max(latencies), 1) if latencies else None,
        "dataflow_p50_ms": percentile(to_redis, 50), "dataflow_p99_ms": percentile(to_redis, 99),
        "serving_p50_ms": percentile(redis_to_client, 50), "serving_p99_ms": percentile(redis_to_client, 99),
        "produce_s": round(produce_s, 1), "peak_rss_mb": round(sum(peak.values()), 1),
        "peak_rss_mb_by_process": {k: round(v, 1) for k, v in peak.items()}, "cpus": os.cpu_count(),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }
