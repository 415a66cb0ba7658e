"""``racewire bench live``: a recorded session played at real time through the whole live path:
``racewire feed-server`` → ``racewire live`` → broker → race dataflow → Redis → serving → an SSE
client. Prints JSON.

The server joins the session ``--from`` seconds in and plays ``--seconds`` of it (``--speed 1``:
real time). Measured for every lap completed meanwhile: from the moment the server wrote the
delta that completes it to the WebSocket, to the moment the SSE client receives the first
leaderboard whose row for that car shows the lap (both stamped with the machine's wall clock:
all processes run here). ``lost`` counts such laps no leaderboard showed within ``--grace`` seconds
after the playback; ``messages`` and ``reconnects`` are the live client's. A lap whose record has
to wait (an in-lap until the car leaves the pit lane, a lap whose time the feed sends later) counts
from the delta that completed it, as a viewer would see it.

The recording has no ``LapCount`` (the service sends it from the start): ``--total-laps`` puts the
distance in its first snapshot.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from infra.bench.harness import percentile, services

DEFAULT_CAPTURE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "livetiming" / "recordings" / \
    "2024_brazil_sprint.txt"


def add_subcommands(sub: Any) -> None:
    p = sub.add_parser("live", help="a recorded session at real time: feed-server -> live -> dataflow -> SSE")
    p.add_argument("--capture", type=Path, default=DEFAULT_CAPTURE, help="recording to play (default: 2024 São Paulo "
                   "sprint from ../shared/data)")
    p.add_argument("--from", dest="from_s", type=float, default=1500.0,
                   help="join the session this far in, s (default: the São Paulo sprint's lap 8)")
    p.add_argument("--seconds", type=float, default=120.0, help="wall seconds of playback")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed (1 = real time)")
    p.add_argument("--total-laps", type=int, default=24, help="the distance, put in the first snapshot when the "
                   "recording has no LapCount (the service sends it; 24 for the São Paulo sprint)")
    p.add_argument("--grace", type=float, default=5.0, help="seconds after the playback for the last updates")
    p.add_argument("--json", action="store_true")
    p.set_defaults(bench_func=bench_live)


def bench_live(args: argparse.Namespace) -> dict[str, Any]:
    if not args.capture.is_file():
        raise SystemExit(f"racewire bench live: no capture at {args.capture} (--capture PATH)")
    with tempfile.TemporaryDirectory(prefix="racewire-bench-live-") as tmp:
        return asyncio.run(_bench_live(args, Path(tmp)))


def _with_distance(capture: Path, target: Path, total: int) -> Path:
    import json

    lines = capture.read_text(encoding="utf-8-sig").splitlines()
    ns, _topic, text = lines[0].split(":", 2)
    init = json.loads(text)
    init.setdefault("LapCount", {"CurrentLap": 1, "TotalLaps": total})
    target.write_text("\n".join([f"{ns}:init:{json.dumps(init)}", *lines[1:]]) + "\n", encoding="utf-8")
    return target


def _racewire(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "infra.cli", *argv], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


async def _bench_live(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import redis

    from infra.bench.serving import BoardWatcher, serving_process
    from infra.flow_cli import flow_process
    from infra.services import free_port
    from infra.topics import create_topics
    from schemas.codec import Codec, make_registry_client
    from schemas.redis_layout import RACES_KEY
    from schemas.settings import load_settings

    race_id = f"bench-live-{uuid.uuid4().hex[:6]}"
    capture = _with_distance(args.capture, workdir / "capture.txt", args.total_laps)
    sent_log = workdir / "sent.log"
    seen: dict[tuple[str, int, int], float] = {}
    loop = asyncio.get_running_loop()
    with services(workdir) as svc:
        create_topics(svc["bootstrap"], partitions=load_settings().input_partitions)
        Codec(make_registry_client(svc["registry_url"])).register_all()
        env = {**os.environ, "RACEWIRE_KAFKA_BOOTSTRAP": svc["bootstrap"], "RACEWIRE_REDIS_URL": svc["redis_url"],
               "RACEWIRE_SCHEMA_REGISTRY_URL": svc["registry_url"], "RACEWIRE_DATA_DIR": str(workdir / "data")}
        rclient: Any = redis.Redis.from_url(svc["redis_url"])
        with contextlib.ExitStack() as stack:
            stack.enter_context(flow_process(svc["bootstrap"], svc["redis_url"], svc["registry_url"], 1,
                                             strategy=False))
            _server, port = stack.enter_context(serving_process(svc["redis_url"], env=env))
            feed_port = free_port()
            feed = _racewire(["feed-server", str(capture), "--port", str(feed_port), "--speed", str(args.speed),
                              "--from", str(args.from_s), "--sent-log", str(sent_log)], env, workdir / "feed.log")
            stack.callback(_stop, feed)
            _wait_port(feed_port)
            live = _racewire(["live", "--url", f"http://127.0.0.1:{feed_port}", "--record", str(workdir / "rec.txt"),
                              "--race-id", race_id], env, workdir / "live.log")
            stack.callback(_stop, live)
            started = time.time()
            deadline = time.monotonic() + 60
            while not rclient.hexists(RACES_KEY, race_id):  # the session record went through the flow
                if time.monotonic() > deadline or live.poll() is not None:
                    tail = (workdir / "live.log").read_text(encoding="utf-8", errors="replace")[-3000:]
                    raise RuntimeError(f"race {race_id} not published within 60 s; racewire live said:\n{tail}")
                await asyncio.sleep(0.05)
            attached = time.time()
            request = f"GET /api/races/{race_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
            await loop.create_connection(lambda: BoardWatcher(request, seen, race_id, clock=time.time),
                                         "127.0.0.1", port)
            await asyncio.sleep(max(0.0, started + args.seconds - time.time()))
            playback_end = time.time()
            await asyncio.sleep(args.grace)
            _stop(live)
            live_out = (workdir / "live.log").read_text(encoding="utf-8", errors="replace")
        rclient.close()

    sent: dict[tuple[int, int], float] = {}
    for line in sent_log.read_text().splitlines() if sent_log.exists() else []:
        ns, car, laps = line.split()
        sent.setdefault((int(car), int(laps)), int(ns) / 1e9)
    # laps completed while the client watched and the playback ran (the join's catch-up laps excluded)
    measured = {k: t for k, t in sent.items() if attached + 0.5 < t <= playback_end}
    by_lap = {k: (seen[(race_id, *k)] - t) * 1000 for k, t in measured.items() if (race_id, *k) in seen}
    latencies = list(by_lap.values())
    stats = _last_stats(live_out)
    return {
        "benchmark": "live", "capture": args.capture.name, "from_s": args.from_s, "seconds": args.seconds,
        "speed": args.speed, "laps": len(measured), "samples": len(latencies), "lost": len(measured) - len(latencies),
        "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
        "max_ms": round(max(latencies), 1) if latencies else None,
        "slowest": [{"car": k[0], "lap": k[1], "ms": round(v, 1)}
                    for k, v in sorted(by_lap.items(), key=lambda kv: kv[1])[-3:]],
        "messages": stats.get("messages"), "reconnects": stats.get("reconnects"),
        "join_to_first_board_s": round(attached - started, 2), "cpus": os.cpu_count(),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _last_stats(output: str) -> dict[str, int]:
    """``messages`` and ``reconnects`` from the live client's last progress line."""
    out: dict[str, int] = {}
    for key in ("messages", "reconnects"):
        found = re.findall(rf"'{key}': (\d+)", output)
        if found:
            out[key] = int(found[-1])
    return out
