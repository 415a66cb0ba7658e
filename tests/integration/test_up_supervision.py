"""`racewire up` over time: a second run with the same data dir, and children that crash.

Each test runs the real command (embedded broker, Redis, PostgreSQL, registry, dataflow, serving)
on free ports with a data dir of its own, and reads the race's state from the embedded Redis.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis

from infra.services import port_in_use
from schemas.redis_layout import state_key
from simulator.race import RaceSimulator
from tests.integration.test_up import REPO, URL_LINE, Lines, _env, _stop_and_check

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UP_WITHIN_S = 180


@contextmanager
def _up(env: dict[str, str], *argv: str) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    proc = subprocess.Popen([sys.executable, "-m", "infra.cli", "up", *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out = Lines(proc)
    try:
        yield proc, out
    finally:
        if proc.poll() is None:
            for child in psutil.Process(proc.pid).children(recursive=True):
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _records(race_id: str, seed: int, laps: int) -> int:
    return sum(1 for _ in RaceSimulator(race_id, seed, laps).records())


def _state(env: dict[str, str], race_id: str) -> dict[str, Any] | None:
    client = redis.Redis.from_url(f"redis://127.0.0.1:{env['RACEWIRE_REDIS_PORT']}/0")
    try:
        raw = client.get(state_key(race_id))
    except redis.RedisError:
        return None
    finally:
        client.close()
    return None if raw is None else dict(json.loads(raw))


def _wait_final(env: dict[str, str], race_id: str, records: int, timeout: float, out: Lines) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        state = _state(env, race_id)
        if state is not None and state.get("final") and state.get("version", 0) >= records:
            return state
        time.sleep(0.5)
    summary = None if state is None else {k: state.get(k) for k in ("status", "lap", "final", "version")}
    laps = None if state is None else sorted({row.get("laps") for row in state.get("rows", [])})
    tail = "\n".join(out.lines[-15:])
    raise AssertionError(f"{race_id} not final with {records} records applied in {timeout:.0f} s: "
                         f"state {summary}, laps per car {laps}\n{tail}")


def _flow(proc: subprocess.Popen[str]) -> psutil.Process:
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "flow race" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    raise AssertionError("no dataflow process under racewire up")


def test_second_up_with_the_same_data_dir_reads_the_new_race(tmp_path: Path) -> None:
    """Issue 11, finding 1: the second run's race is complete and final, not skipped."""
    env = _env(tmp_path)
    with _up(env, "--seed", "2", "--laps", "4", "--speed", "max") as (proc, out):
        out.wait_for(URL_LINE, UP_WITHIN_S)
        _wait_final(env, "sim-2", _records("sim-2", 2, 4), UP_WITHIN_S, out)
        time.sleep(12)  # at least one recovery snapshot (Bytewax's epoch is 10 s) holds its offsets
        flow = _flow(proc)
        flow.kill()  # kill -9 of the flow, as in the report
        flow.wait(10)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    with _up(env, "--seed", "7", "--laps", "2", "--speed", "max") as (proc, out):
        out.wait_for(URL_LINE, UP_WITHIN_S)
        state = _wait_final(env, "sim-7", _records("sim-7", 7, 2), 120, out)
        assert {row["laps"] for row in state["rows"] if row.get("status") != "RETIRED"} <= {1, 2}
        assert state["lap"] == 2
        _stop_and_check(proc, env)


def test_up_restarts_crashed_children_and_says_so(tmp_path: Path) -> None:
    """Issue 11, finding 4: a crashed child is restarted (same port, same data dir), and the console
    names it, its exit code and the attempt; the broker comes back with its topics."""
    from confluent_kafka.admin import AdminClient

    env = _env(tmp_path, RACEWIRE_INPUT_PARTITIONS="3")
    with _up(env, "--seed", "3", "--laps", "3", "--speed", "max") as (proc, out):
        url = out.wait_for(URL_LINE, UP_WITHIN_S).group(1)
        _wait_final(env, "sim-3", _records("sim-3", 3, 3), UP_WITHIN_S, out)

        flow = _flow(proc)
        flow.kill()
        out.wait_for(re.compile(r"racewire up: the race dataflow exited with code -9; restarting it \(attempt 1\)"),
                     30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if _flow(proc).pid != flow.pid:
                    break
            except AssertionError:
                pass
            time.sleep(0.5)
        assert _flow(proc).pid != flow.pid

        serving = next(c for c in psutil.Process(proc.pid).children(recursive=True)
                       if "serve --port" in " ".join(c.cmdline()))
        serving.kill()
        out.wait_for(re.compile(r"racewire up: the serving layer exited with code -9; restarting it \(attempt 1\)"),
                     30)
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and status != 200:
            try:
                status = httpx.get(f"{url}api/races", timeout=2).status_code
            except httpx.HTTPError:
                time.sleep(0.5)
        assert status == 200

        broker = next(c for c in psutil.Process(proc.pid).children(recursive=True) if "tansu" in c.name())
        broker.kill()
        out.wait_for(re.compile(r"racewire up: the embedded Kafka broker exited with code -9; "
                                r"restarting it \(attempt 1\)"), 30)
        out.wait_for(re.compile(r"racewire up: the embedded Kafka broker is back on port \d+ with its topics"), 60)
        metadata = AdminClient({"bootstrap.servers": f"127.0.0.1:{env['RACEWIRE_KAFKA_PORT']}"}).list_topics(timeout=10)
        assert metadata.topics["f1.timing.lap"].partitions.keys() == {0, 1, 2}
        assert metadata.topics["f1.race.events"].partitions.keys() == {0, 1, 2}

        valkey = next(c for c in psutil.Process(proc.pid).children(recursive=True) if "valkey" in c.name())
        valkey.kill()
        out.wait_for(re.compile(r"racewire up: the embedded Redis-compatible server exited with code -9; "
                                r"restarting it \(attempt 1\)"), 30)
        assert proc.poll() is None
        _stop_and_check(proc, env)


def test_up_stops_with_a_clear_message_on_repeated_fast_crashes(tmp_path: Path) -> None:
    """A child that cannot start (here: serving's port is taken) is retried a few times with
    backoff, then `racewire up` stops, naming the child and what to look at; nothing is left."""
    env = _env(tmp_path, RACEWIRE_RESTART_MAX_CRASHES="3", RACEWIRE_RESTART_WINDOW_S="120")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", int(env["RACEWIRE_HTTP_PORT"])))
        blocker.listen()
        with _up(env, "--no-race") as (proc, out):
            first = re.compile(r"racewire up: the serving layer exited with code \d+; restarting it \(attempt 1\)")
            out.wait_for(first, UP_WITHIN_S)
            out.wait_for(re.compile(r"racewire up: the serving layer crashed 3 times within 120 s"), 120)
            code = proc.wait(60)
            assert code != 0
        for name in ("KAFKA", "REDIS", "POSTGRES", "REGISTRY"):
            assert not port_in_use(int(env[f"RACEWIRE_{name}_PORT"])), f"port of {name} still in use"
