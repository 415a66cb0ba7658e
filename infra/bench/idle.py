"""``racewire bench idle --json``: what a whole ``racewire up`` costs when nothing happens.

Starts ``racewire up --no-race`` on free ports with a data dir of its own (embedded broker,
Redis, PostgreSQL, registry, dataflow, serving), optionally runs a race through it first
(``--race-laps N``, at max speed, waiting until it is final), lets it settle, then measures the
CPU time of every process of the tree over ``--seconds`` (default 30) and prints it as a
percentage of one core, per role and in total, with the resident memory. Then it stops the
system (SIGTERM) and checks nothing is left.

    racewire bench idle --json
    racewire bench idle --race-laps 5 --seconds 30 --json     # idle after a race
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

TARGET_PERCENT = 2.0
URL_LINE = re.compile(r"racewire is up: (http://\S+)")
#: role of a process, by the first pattern its command line matches
ROLES: tuple[tuple[str, str], ...] = (
    ("broker", "tansu"), ("redis", "valkey-server"), ("postgres", "postgres"),
    ("dataflow", "flow race"), ("serving", " serve "), ("simulator", " simulate "), ("up", " up "),
)  # fmt: skip


def add_subcommands(sub: Any) -> None:
    p = sub.add_parser("idle", help="idle CPU of a whole `racewire up --no-race` (%% of one core, per process)")
    p.add_argument("--seconds", type=float, default=30.0, help="measuring window (default 30)")
    p.add_argument("--settle", type=float, default=70.0,
                   help="seconds to wait after everything is up (and after the race) before measuring (default "
                        "70: the dataflow pauses fetching after 60 s without a record)")
    p.add_argument("--race-laps", type=int, default=0, help="run a race of this many laps first (default: none)")
    p.add_argument("--timeout", type=float, default=300.0, help="give up starting after this many seconds")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.set_defaults(bench_func=bench_idle)


def _role(cmdline: str) -> str:
    padded = f" {cmdline} "
    for role, pattern in ROLES:
        if pattern in padded:
            return role
    return "other"


def _cpu_s(p: psutil.Process) -> float | None:
    try:
        t = p.cpu_times()
    except psutil.Error:
        return None
    return float(t.user + t.system)


def _env(data: Path) -> dict[str, str]:
    from infra.services import free_ports

    env = {k: v for k, v in os.environ.items() if not k.startswith("RACEWIRE_")}
    names = ("HTTP", "KAFKA", "REDIS", "POSTGRES", "REGISTRY")
    for name, port in zip(names, free_ports(len(names)), strict=True):
        env[f"RACEWIRE_{name}_PORT"] = str(port)
    env["RACEWIRE_DATA_DIR"] = str(data)
    return env


def _wait_url(proc: subprocess.Popen[str], lines: list[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(lines):
            if m := URL_LINE.search(line):
                return m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError("racewire up did not come up:\n" + "\n".join(lines[-30:]))


def _wait_flow_started(lines: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any("race dataflow starting" in line for line in list(lines)):
            return
        time.sleep(0.2)
    raise RuntimeError("the race dataflow did not start:\n" + "\n".join(lines[-30:]))


def _run_race(env: dict[str, str], laps: int, timeout: float) -> None:
    import redis

    from dataflows.race.state import applied_of
    from schemas.redis_layout import state_key
    from simulator.race import RaceSimulator

    race_id = "idle-1"
    records = sum(1 for _ in RaceSimulator(race_id, 1, laps).records())
    subprocess.run([sys.executable, "-m", "infra.cli", "--log-level", "WARNING", "simulate", "--race-id", race_id,
                    "--laps", str(laps), "--speed", "max",
                    "--bootstrap", f"127.0.0.1:{env['RACEWIRE_KAFKA_PORT']}",
                    "--registry-url", f"http://127.0.0.1:{env['RACEWIRE_REGISTRY_PORT']}"],
                   env=env, check=True, stdout=subprocess.DEVNULL, timeout=timeout)
    client = redis.Redis.from_url(f"redis://127.0.0.1:{env['RACEWIRE_REDIS_PORT']}/0")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            raw = client.get(state_key(race_id))
            if raw is not None:
                state = json.loads(raw)
                if state.get("final") and applied_of(state.get("version", 0)) >= records:
                    return
            time.sleep(0.5)
    finally:
        client.close()
    raise RuntimeError(f"race {race_id} not final within {timeout:.0f} s")


def measure(root: psutil.Process, seconds: float) -> dict[str, Any]:
    """CPU of ``root`` and its descendants over ``seconds``: % of one core per role and in total."""
    procs = [root, *root.children(recursive=True)]
    before = {p.pid: (p, _cpu_s(p)) for p in procs}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    by_role: dict[str, float] = {}
    rss: dict[str, float] = {}
    detail = []
    for pid, (p, c0) in before.items():
        c1 = _cpu_s(p)
        if c0 is None or c1 is None:
            continue
        try:
            cmdline = " ".join(p.cmdline())
            mem = p.memory_info().rss / 2**20
        except psutil.Error:
            continue
        role = _role(cmdline)
        pct = 100 * (c1 - c0) / elapsed
        by_role[role] = by_role.get(role, 0.0) + pct
        rss[role] = rss.get(role, 0.0) + mem
        detail.append({"pid": pid, "role": role, "cpu_percent": round(pct, 2), "cmd": cmdline[:100]})
    total = sum(by_role.values())
    return {
        "cpu_percent_of_one_core": round(total, 2),
        "by_role": {k: round(v, 2) for k, v in sorted(by_role.items(), key=lambda kv: -kv[1])},
        "rss_mb": {k: round(v, 1) for k, v in sorted(rss.items())},
        "processes": sorted(detail, key=lambda d: -d["cpu_percent"]),
        "window_s": round(elapsed, 1),
    }


def bench_idle(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="racewire-idle-") as tmp:
        env = _env(Path(tmp) / "data")
        proc = subprocess.Popen([sys.executable, "-m", "infra.cli", "up", "--no-race"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        lines: list[str] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip())

        threading.Thread(target=read, daemon=True).start()
        try:
            _wait_url(proc, lines, args.timeout)
            _wait_flow_started(lines, args.timeout)
            if args.race_laps:
                _run_race(env, args.race_laps, args.timeout)
            time.sleep(args.settle)
            result = measure(psutil.Process(proc.pid), args.seconds)
        finally:
            descendants = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            _gone, alive = psutil.wait_procs(descendants, timeout=10)
        return {
            "bench": "idle",
            "command": "racewire up --no-race",
            "after_race_laps": args.race_laps,
            **result,
            "target_percent": TARGET_PERCENT,
            "within_target": result["cpu_percent_of_one_core"] < TARGET_PERCENT,
            "left_running": [p.pid for p in alive],
            "peak_rss_mb": round(sum(result["rss_mb"].values()), 1),
            "cpus": os.cpu_count(),
        }
