"""The system a drill runs: services it owns, ``racewire up`` as a child, and a monitor.

- :class:`Stack`: an embedded broker, Redis-compatible server and PostgreSQL on free ports in a
  temporary folder, plus racewire's schema registry, which the drill can stop, start again on
  the same port, freeze (``SIGSTOP``/``SIGCONT``) or flush. Never the shared servers.
- :class:`UpRun`: ``racewire up`` pointed at those services (``RACEWIRE_KAFKA_BOOTSTRAP``,
  ``RACEWIRE_REDIS_URL``, ``RACEWIRE_DATABASE_URL``, ``RACEWIRE_SCHEMA_REGISTRY_URL``), so it starts
  only racewire's own processes. It keeps every process ``up`` ever started (restarted children
  included) and, on :meth:`UpRun.stop`, ends them all, even those ``up`` left behind.
- :class:`Monitor`: samples, a few times a second, what the drill judges progress and recovery
  by: the race's state version, lap and status, its event stream and lap chart in Redis, its laps
  in PostgreSQL, and the flow's status documents (``racewire:flow:status:<process>``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psutil
import psycopg
import redis

from infra.registry import RegistryServer
from infra.services import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis, free_ports
from schemas import redis_layout as layout

log = logging.getLogger("racewire.drill")



class Stack:
    """Broker, Redis, PostgreSQL and schema registry of one drill run, in ``workdir``."""

    def __init__(self, workdir: Path, redis_persist: bool = False) -> None:
        self.workdir = workdir
        kafka_port, redis_port, postgres_port = free_ports(3)
        self.kafka = EmbeddedKafka(kafka_port, workdir / "kafka")
        self.redis = EmbeddedRedis(redis_port, workdir / "redis", persist=redis_persist)
        self.postgres = EmbeddedPostgres(postgres_port, workdir / "postgres", fsync=False)
        self.registry = RegistryServer(workdir / "registry", port=0)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        try:
            for server in (self.kafka, self.redis, self.postgres):
                server.start()
                self._stack.callback(server.stop)
            self.registry.start()
            self._stack.callback(self.registry.stop)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stack.close()

    @property
    def urls(self) -> dict[str, str]:
        return {"RACEWIRE_KAFKA_BOOTSTRAP": self.kafka.bootstrap, "RACEWIRE_REDIS_URL": self.redis.url,
                "RACEWIRE_DATABASE_URL": self.postgres.url, "RACEWIRE_SCHEMA_REGISTRY_URL": self.registry.url}

    def flush_redis(self) -> None:
        client = redis.Redis.from_url(self.redis.url, socket_timeout=5)
        try:
            client.flushall()
        finally:
            client.close()

    @contextlib.contextmanager
    def frozen(self, server: EmbeddedKafka | EmbeddedRedis | EmbeddedPostgres) -> Iterator[None]:
        """``SIGSTOP`` the server's process group for the ``with`` block, then ``SIGCONT`` it."""
        pid = server.pid
        if pid is None:
            raise RuntimeError(f"{server.service} is not running")
        os.killpg(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _is_command(cmd: list[str], *words: str) -> bool:
    """``cmd`` (a child of ``racewire up``) runs the sub-command ``words`` (``flow race``, ``simulate``)."""
    n = len(words)
    return any(tuple(cmd[i:i + n]) == words for i in range(len(cmd) - n + 1))


class UpRun:
    """``racewire up ARGS`` as a child process of the drill, with its console kept."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str]) -> None:
        self.workdir = workdir
        self.args = args
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.started_at = 0.0
        self.lines: list[tuple[float, str]] = []
        self._seen: dict[int, psutil.Process] = {}  # alive when last looked
        self._ever: dict[int, psutil.Process] = {}  # every process up started, for left_behind()
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def start(self) -> Self:
        log_file = self.workdir / "up.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "up", *self.args], cwd=self.workdir, env=self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self.started_at = time.monotonic()
        self._reader = threading.Thread(target=self._read, args=(log_file,), daemon=True, name="drill-up-console")
        self._reader.start()
        return self

    def _read(self, log_file: Path) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with log_file.open("w", encoding="utf-8") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()
                if line.startswith("racewire up: "):
                    with self._lock:
                        self.lines.append((time.monotonic(), line.rstrip()))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def console(self, since: float = 0.0, until: float = float("inf")) -> list[str]:
        """``racewire up: …`` lines printed between ``since`` and ``until`` (monotonic)."""
        with self._lock:
            return [line for t, line in self.lines if since <= t < until]

    def scan(self) -> list[psutil.Process]:
        """Every live process ``up`` has started (remembered, so none escapes :meth:`stop`)."""
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(psutil.Error):
                for p in psutil.Process(self.proc.pid).children(recursive=True):
                    self._seen.setdefault(p.pid, p)
                    self._ever.setdefault(p.pid, p)
        alive = []
        for pid, p in list(self._seen.items()):
            try:
                running = p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                running = False
            if running:
                alive.append(p)
            else:
                self._seen.pop(pid, None)
        return alive

    @property
    def started(self) -> int:
        """How many processes ``up`` has been seen to start (restarts included)."""
        return len(self._ever)

    def left_behind(self) -> list[int]:
        """Processes ``up`` started (or ``up`` itself) that are still alive."""
        procs = list(self._ever.values())
        with contextlib.suppress(psutil.Error):
            if self.proc is not None and self.proc.poll() is None:
                procs.append(psutil.Process(self.proc.pid))
        alive = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p.pid)
        return sorted(alive)

    def pids_of(self, *words: str) -> list[int]:
        """Live processes running ``racewire <words>`` (e.g. ``flow race``), children of ``up``."""
        return sorted(p.pid for p in self.scan() if _is_command(_cmdline(p), *words))

    def stop(self, timeout: float = 30.0) -> None:
        """Stop ``up`` (``SIGTERM``: it stops its children), then kill whatever is left of what it started."""
        if self.proc is None:
            return
        self.scan()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("racewire up did not stop within %.0f s; killing it", timeout)
        _gone, alive = psutil.wait_procs(self.scan(), timeout=10)
        for p in alive:  # up's children lead their own process groups: take the group with them
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)


@dataclass(frozen=True)
class FlowStatus:
    """What the flow's status documents say about one race (``None``: not reported)."""

    processes: int
    lag: int | None  # total over every partition; None when any partition's lag is unknown
    read: int | None
    applied: int | None
    rejected: int | None
    duplicate: int | None  # exact redeliveries of records already applied (absorbed)
    updated_at: float | None  # the oldest document's ``updated_at``, epoch seconds

    @property
    def caught_up(self) -> bool:
        """Every partition read to its end, and every record read for the race applied (or rejected)."""
        return (self.lag == 0 and self.read is not None and self.applied is not None
                and self.read == self.applied + (self.rejected or 0) + (self.duplicate or 0))


def flow_status(docs: list[dict[str, Any]], race_id: str) -> FlowStatus | None:
    """Sum the status documents of every flow process (see the contracts) for ``race_id``."""
    if not docs:
        return None
    lag: int | None = 0
    read = applied = rejected = duplicate = 0
    seen_race = False
    updated: list[float] = []
    for doc in docs:
        for part in (doc.get("partitions") or {}).values():
            value = part.get("lag") if isinstance(part, dict) else None
            lag = None if value is None or lag is None else lag + int(value)
        race = (doc.get("races") or {}).get(race_id)
        if isinstance(race, dict):
            seen_race = True
            read += int(race.get("read") or 0)
            applied += int(race.get("applied") or 0)
            rejected += int(race.get("rejected") or 0)
            duplicate += int(race.get("duplicate") or 0)
        with contextlib.suppress(TypeError, ValueError):
            updated.append(datetime.fromisoformat(str(doc.get("updated_at"))).timestamp())
    return FlowStatus(len(docs), lag, read if seen_race else None, applied if seen_race else None,
                      rejected if seen_race else None, duplicate if seen_race else None,
                      min(updated) if updated else None)


@dataclass
class Sample:
    """One look at the running system (``None``: that store did not answer)."""

    t: float  # monotonic
    wall: float  # epoch seconds
    version: int | None = None
    lap: int | None = None
    status: str | None = None
    events: int | None = None
    chart_laps: int | None = None  # laps in the Redis lap chart (sum over laps of the cars listed)
    #: of what Redis held when :meth:`Monitor.take_baseline` was called, how much is missing now
    #: (event ids in the stream, car laps in the lap chart); None without a baseline
    missing: int | None = None
    pg_laps: int | None = None
    pg_events: int | None = None
    flow: FlowStatus | None = None
    flow_pids: tuple[int, ...] = ()
    sim_alive: bool = False
    up_running: bool = True
    outputs: int = 0

    @property
    def redis_ok(self) -> bool:
        return self.events is not None

    def fingerprint(self) -> tuple[Any, ...]:
        return (self.version, self.status, self.events, self.chart_laps, self.pg_laps, self.pg_events, self.outputs)


@dataclass
class Monitor:
    """Samples the system every ``interval`` seconds in a thread; :attr:`samples` keeps them all."""

    race_id: str
    redis_url: str
    database_url: str
    up: UpRun
    outputs: Callable[[], int]
    interval: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    sim_seen: bool = False
    #: event ids of the stream and (lap, car) pairs of the lap chart, see :meth:`take_baseline`
    baseline: frozenset[str] | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="drill-monitor")
        self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._pg: psycopg.Connection[Any] | None = None

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._redis.close()
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.close()

    def take_baseline(self) -> int:
        """Remember what Redis holds for the race now; later samples say how much of it is missing."""
        client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        try:
            self.baseline = frozenset(self._redis_items(client))
        finally:
            client.close()
        return len(self.baseline)

    def _redis_items(self, client: Any) -> set[str]:
        items = {f"event {fields[layout.EVENT_ID_FIELD].decode()}"
                 for _id, fields in client.xrange(layout.events_key(self.race_id))}
        for lap, order in client.hgetall(layout.lapchart_key(self.race_id)).items():
            items.update(f"lap {lap.decode()}:{car}" for car in json.loads(order))
        return items

    @property
    def latest(self) -> Sample:
        return self.samples[-1] if self.samples else Sample(time.monotonic(), time.time())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.sample())
            except Exception:  # a monitor that dies would stall the drill; log and go on
                log.exception("drill monitor sample failed")
            self._stop.wait(self.interval)

    def sample(self) -> Sample:
        s = Sample(time.monotonic(), time.time())
        s.flow_pids = tuple(self.up.pids_of("flow", "race"))
        s.sim_alive = bool(self.up.pids_of("simulate"))
        self.sim_seen = self.sim_seen or s.sim_alive
        s.up_running = self.up.running
        s.outputs = self.outputs()
        r = self.race_id
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(layout.version_key(r))
            pipe.hget(layout.RACES_KEY, r)
            pipe.xlen(layout.events_key(r))
            pipe.hvals(layout.lapchart_key(r))
            version, summary, events, chart = pipe.execute()
            s.version = None if version is None else int(version)
            if summary is not None:
                doc = json.loads(summary)
                s.lap, s.status = doc.get("lap"), doc.get("status")
            s.events = int(events)
            s.chart_laps = sum(len(json.loads(order)) for order in chart)
            keys = list(self._redis.scan_iter(match=layout.FLOW_STATUS_PATTERN, count=100))
            docs = [json.loads(v) for v in self._redis.mget(keys) if v is not None] if keys else []
            s.flow = flow_status(docs, r)
            if self.baseline is not None:
                s.missing = len(self.baseline - self._redis_items(self._redis))
        except (redis.RedisError, OSError, ValueError):
            pass
        try:
            if self._pg is None or self._pg.closed:
                self._pg = psycopg.connect(self.database_url, connect_timeout=1, autocommit=True)
            row = self._pg.execute("SELECT (SELECT count(*) FROM laps WHERE race_id = %s), "
                                   "(SELECT count(*) FROM events WHERE race_id = %s)", (r, r)).fetchone()
            if row is not None:
                s.pg_laps, s.pg_events = int(row[0]), int(row[1])
        except (psycopg.Error, OSError):
            if self._pg is not None:
                with contextlib.suppress(Exception):
                    self._pg.close()
            self._pg = None
        return s

    def since(self, t: float) -> list[Sample]:
        return [s for s in list(self.samples) if s.t >= t]

    def wait(self, until: Callable[[Sample], bool], timeout: float, give_up: Callable[[Sample], bool] | None = None
             ) -> Sample | None:
        """The first new sample for which ``until`` holds; None after ``timeout`` s or once ``give_up`` holds."""
        deadline = time.monotonic() + timeout
        seen = len(self.samples)
        while time.monotonic() < deadline:
            samples = self.samples
            for s in samples[seen:]:
                if until(s):
                    return s
                if give_up is not None and give_up(s):
                    return None
            seen = len(samples)
            time.sleep(self.interval / 2)
        return None
