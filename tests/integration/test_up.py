"""`racewire up`, as a user runs it: the README's run command in a fresh checkout and virtual
environment, on non-default ports; then the same with external services configured."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from infra.services import free_ports, port_in_use
from schemas.redis_layout import RACES_KEY, race_keys_pattern

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
UP_WITHIN_S = 90
URL_LINE = re.compile(r"racewire is up: (http://\S+)")


class Lines:
    """Collects a process's output lines in the background."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip())

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := pattern.search(line):
                    return m
            time.sleep(0.2)
        tail = "\n".join(self.lines[-40:])
        raise AssertionError(f"no line matching {pattern.pattern!r} in {timeout} s; output:\n{tail}")


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RACEWIRE_")}
    names = ("HTTP", "KAFKA", "REDIS", "POSTGRES", "REGISTRY")
    ports = {name: str(port) for name, port in zip(names, free_ports(len(names)), strict=True)}
    env.update({f"RACEWIRE_{name}_PORT": port for name, port in ports.items()})
    env["RACEWIRE_DATA_DIR"] = str(tmp / "data")
    env.update(extra)
    return env


def _wait_leaderboard(url: str, race_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}api/races/{race_id}/leaderboard", timeout=2)
            last = r.status_code
            if r.status_code == 200 and len(r.json().get("rows", [])) == 20:
                return dict(r.json())
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"no 20-row leaderboard for {race_id} at {url} in {timeout} s (last: {last})")


def _cmdline(p: psutil.Process) -> str:
    """A child's command line; "" for one that has just exited (the race finishes quickly)."""
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _stop_and_check(proc: subprocess.Popen[str], env: dict[str, str]) -> None:
    descendants = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    _gone, alive = psutil.wait_procs(descendants, timeout=10)
    assert not alive, f"processes left after stop: {[(p.pid, p.name()) for p in alive]}"
    for name in ("HTTP", "KAFKA", "REDIS", "POSTGRES", "REGISTRY"):
        assert not port_in_use(int(env[f"RACEWIRE_{name}_PORT"])), f"port of {name} still in use"


def test_readme_run_command_in_a_fresh_checkout(tmp_path: Path) -> None:
    checkout = tmp_path / "racewire"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, checkout / rel)
    env = _env(tmp_path)
    proc = subprocess.Popen(["bash", "infra/dev.sh", "up", "--speed", "max", "--laps", "3"], cwd=checkout,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out = Lines(proc)
    try:
        out.wait_for(re.compile(r"racewire up: starting"), 600)  # after the install into the fresh venv
        started = time.monotonic()
        url = out.wait_for(URL_LINE, UP_WITHIN_S).group(1)
        board = _wait_leaderboard(url, "sim-1", UP_WITHIN_S - (time.monotonic() - started))
        assert board["race_id"] == "sim-1"
        page = httpx.get(url, timeout=5)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert (checkout / ".venv").is_dir() and (tmp_path / "data").is_dir()
        _stop_and_check(proc, env)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_up_uses_external_services_when_configured(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, postgres_url: str, registry_url: str
) -> None:
    race_id = f"up-{uuid.uuid4().hex[:8]}"
    env = _env(tmp_path, RACEWIRE_KAFKA_BOOTSTRAP=kafka_bootstrap, RACEWIRE_REDIS_URL=redis_url,
               RACEWIRE_DATABASE_URL=postgres_url, RACEWIRE_SCHEMA_REGISTRY_URL=registry_url)
    proc = subprocess.Popen([sys.executable, "-m", "infra.cli", "up", "--speed", "max", "--laps", "3",
                             "--race-id", race_id], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out = Lines(proc)
    try:
        url = out.wait_for(URL_LINE, UP_WITHIN_S).group(1)
        _wait_leaderboard(url, race_id, UP_WITHIN_S)
        names = " ".join(_cmdline(p) for p in psutil.Process(proc.pid).children(recursive=True))
        assert "valkey" not in names and "postgres" not in names and "tansu" not in names
        assert not any("starting the embedded" in line for line in out.lines)
        _stop_and_check(proc, env)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        import redis

        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(race_keys_pattern(race_id)):
            client.delete(key)
        client.hdel(RACES_KEY, race_id)
