"""The fault drills, scaled down for CI: each runs a short race through the real system
(``racewire up`` against a broker, Redis and PostgreSQL the drill starts itself on free ports),
applies its fault mid-race and compares the final Redis, PostgreSQL and output-topic contents
with an uninterrupted run of the same race (run once for the module).

A drill passes when nothing is lost, nothing is duplicated, nothing differs from the
uninterrupted run, the system recovered by itself, and ``racewire up`` is still running. The
assertion message is the drill's JSON line: what was compared and what differed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import psutil
import pytest

from infra.drills.runner import DRILLS, SCALES, RaceSpec, reference, run_drill

pytestmark = [pytest.mark.drill, pytest.mark.slow]

SCALE = SCALES["ci"]
SPEC = RaceSpec(seed=1, laps=SCALE.laps, speed=SCALE.speed)


@pytest.fixture(scope="module")
def uninterrupted() -> dict[str, Any]:
    return reference(SPEC, SCALE)


@pytest.mark.parametrize("name", list(DRILLS))
def test_drill(name: str, uninterrupted: dict[str, Any]) -> None:
    result = run_drill(name, SPEC, SCALE, uninterrupted)
    line = json.dumps(result.as_dict())
    assert result.details["processes_left"] == [], f"processes left behind: {line}"
    assert result.lost == 0, line
    assert result.duplicated == 0, line
    assert result.passed, line


def test_interrupted_drill_leaves_no_process_behind() -> None:
    """Ctrl-C in the middle of a run stops racewire up, everything it started and every service."""
    proc = subprocess.Popen([sys.executable, "-m", "infra.cli", "--log-level", "WARNING", "drill", "kill-flow",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + 120
        flow_started = False
        while time.monotonic() < deadline and not flow_started and proc.poll() is None:
            for p in psutil.Process(proc.pid).children(recursive=True):
                seen.setdefault(p.pid, p)
                flow_started = flow_started or _runs(p, "flow", "race")
            time.sleep(0.2)
        assert flow_started, f"the drill never started a dataflow (exit {proc.poll()})"
        names = {_name(p) for p in seen.values()}
        assert {"tansu", "valkey-server", "postgres"} <= names, names
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=90)
        assert proc.returncode == 130, err[-2000:]
        _gone, alive = psutil.wait_procs(list(seen.values()), timeout=10)
        assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in seen.values():
            with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
                if p.is_running():
                    os.killpg(p.pid, signal.SIGKILL)


def _runs(p: psutil.Process, *words: str) -> bool:
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return False
    return all(w in cmd for w in words)


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:
        return ""
