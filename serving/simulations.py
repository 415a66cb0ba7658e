"""Simulated races started over HTTP: each is a ``racewire simulate`` subprocess.

The manager keeps a bounded table of runs (the oldest finished ones are forgotten first), the last
lines each run printed, and stops every run it started when the app shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("racewire.serving.simulations")

RACE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
_RACE_ID = re.compile(RACE_ID_PATTERN)
DEFAULT_COMMAND: tuple[str, ...] = (sys.executable, "-m", "infra.cli", "simulate")


class SimulationError(RuntimeError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Simulation:
    id: str
    race_id: str
    seed: int
    laps: int
    speed: float
    follow: str | None
    proc: asyncio.subprocess.Process
    started_at: datetime
    output: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    stopped: bool = False
    ended_at: datetime | None = None
    reader: asyncio.Task[None] | None = None

    @property
    def state(self) -> str:
        rc = self.proc.returncode
        if rc is None:
            return "running"
        if self.stopped:
            return "stopped"
        return "finished" if rc == 0 else "failed"

    def to_dict(self) -> dict[str, Any]:
        url = f"/?race={self.race_id}" + (f"&follow={self.follow}" if self.follow else "")
        return {"id": self.id, "race_id": self.race_id, "state": self.state, "seed": self.seed, "laps": self.laps,
                "speed": self.speed, "follow": self.follow, "pid": self.proc.pid,
                "returncode": self.proc.returncode, "started_at": self.started_at.isoformat(),
                "ended_at": self.ended_at.isoformat() if self.ended_at else None,
                "output_tail": list(self.output), "watch_url": url}


class SimulationManager:
    def __init__(self, env: dict[str, str], command: Sequence[str] = DEFAULT_COMMAND, max_running: int = 10,
                 max_kept: int = 100) -> None:
        self.env = env
        self.command = tuple(command)
        self.max_running = max_running
        self.max_kept = max_kept
        self.runs: OrderedDict[str, Simulation] = OrderedDict()

    def running(self) -> int:
        return sum(1 for s in self.runs.values() if s.state == "running")

    async def start(self, *, seed: int, laps: int, speed: float, race_id: str | None,
                    follow: str | None) -> Simulation:
        race_id = race_id or f"sim-{seed}-{uuid.uuid4().hex[:6]}"
        if not _RACE_ID.match(race_id):
            raise SimulationError(f"race_id {race_id!r} must match {RACE_ID_PATTERN}", 422)
        existing = self.runs.get(race_id)
        if existing is not None and existing.state == "running":
            raise SimulationError(f"simulation {race_id!r} is already running; stop it first or pick another race_id",
                                  409)
        if self.running() >= self.max_running:
            raise SimulationError(f"{self.max_running} simulations are already running; stop one first", 429)
        args = [*self.command, "--race-id", race_id, "--seed", str(seed), "--laps", str(laps), "--speed", str(speed)]
        proc = await asyncio.create_subprocess_exec(
            *args, env={**os.environ, **self.env}, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        sim = Simulation(race_id, race_id, seed, laps, speed, follow, proc, datetime.now(UTC))
        sim.reader = asyncio.create_task(self._read(sim), name=f"simulation-{race_id}")
        self.runs.pop(race_id, None)
        self.runs[race_id] = sim
        self._forget_old()
        log.info("started simulation %s (pid %d, seed %d, %d laps, speed %s)", race_id, proc.pid, seed, laps, speed)
        return sim

    async def _read(self, sim: Simulation) -> None:
        assert sim.proc.stdout is not None
        async for line in sim.proc.stdout:
            sim.output.append(line.decode("utf-8", "replace").rstrip()[:500])
        await sim.proc.wait()
        sim.ended_at = datetime.now(UTC)
        log.info("simulation %s ended with code %s", sim.id, sim.proc.returncode)

    def _forget_old(self) -> None:
        while len(self.runs) > self.max_kept:
            for key, sim in self.runs.items():
                if sim.state != "running":
                    del self.runs[key]
                    break
            else:
                return

    def get(self, sim_id: str) -> Simulation:
        sim = self.runs.get(sim_id)
        if sim is None:
            known = ", ".join(self.runs) or "none"
            raise SimulationError(f"simulation {sim_id!r} not found; known simulations: {known}", 404)
        return sim

    async def stop(self, sim_id: str, timeout_s: float = 5.0) -> Simulation:
        sim = self.get(sim_id)
        if sim.proc.returncode is None:
            sim.stopped = True
            with contextlib.suppress(ProcessLookupError):
                sim.proc.terminate()
            try:
                await asyncio.wait_for(sim.proc.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    sim.proc.kill()
                await sim.proc.wait()
        if sim.reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(sim.reader, 2)
        return sim

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(s.id) for s in list(self.runs.values()) if s.state == "running"),
                             return_exceptions=True)
