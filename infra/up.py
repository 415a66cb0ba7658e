"""``racewire up``: the whole system on one machine, supervised.

With no service URLs configured it starts embedded servers from Python packages (a
Kafka-compatible broker, a Redis-compatible server, PostgreSQL, racewire's schema registry),
creates the topics, then runs the race dataflow (with recovery), the serving layer and a race —
simulated, or a real one replayed with ``--replay PATH`` — prints the URL and stops everything
on Ctrl-C or SIGTERM, leaving no process behind. With ``RACEWIRE_KAFKA_BOOTSTRAP``,
``RACEWIRE_REDIS_URL``, ``RACEWIRE_DATABASE_URL`` and ``RACEWIRE_SCHEMA_REGISTRY_URL`` set it uses
those and starts only racewire's own processes. Every data folder lives under
``RACEWIRE_DATA_DIR``.

**Supervision.** Every child is watched: the dataflow (restarted from its recovery directory),
the serving layer, the simulated race (until it has produced its race), and the embedded servers
it started (same port, same data dir; the broker then gets its topics back, with the configured
partitions, before the message that it is back). A crashed child is restarted after a backoff
that doubles per crash (``RACEWIRE_RESTART_BACKOFF_S`` up to ``RACEWIRE_RESTART_BACKOFF_MAX_S``),
and the console says which child, its exit code and the attempt. A child that crashes
``RACEWIRE_RESTART_MAX_CRASHES`` times within ``RACEWIRE_RESTART_WINDOW_S`` seconds stops
everything, with a message naming it.

**A consistent start.** The embedded broker keeps its data in memory, so each ``racewire up``
starts it empty. The dataflow's recovery state and the producers' spools of a previous run refer
to data that no longer exists (offsets of the old broker, records of its races): they are
discarded, and the console says so. With an external broker both are kept (the dataflow checks
its recovery state against the topics it meets; the producers deliver what they spooled).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("racewire.up")

SUPERVISE_EVERY_S = 0.5
"""How often ``racewire up`` looks at its children (and sleeps otherwise)."""
STOP_TIMEOUT_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--speed", default="5", help="race speed-up: 1 is real time, 'max' as fast as possible")
    parser.add_argument("--laps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--race-id", default=None)
    parser.add_argument("--workers", type=int, default=None, help="dataflow worker processes")
    parser.add_argument("--replay", type=Path, default=None, help="replay a real race from a lap table")
    parser.add_argument("--results", type=Path, default=None, help="results.json for --replay (grid, metadata)")
    parser.add_argument("--no-race", action="store_true", help="start everything but the race")


def _step(message: str) -> None:
    print(f"racewire up: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# supervised children


@dataclass
class Child:
    """One supervised child: how to start it, how to tell whether it still runs, how to stop it.

    ``poll`` returns ``None`` while the child runs, else its exit code. A child with
    ``done_on_success`` (the race source) is finished, not crashed, when it exits with 0.
    """

    name: str
    start: Callable[[], None]
    poll: Callable[[], int | None]
    stop: Callable[[], None]
    done_on_success: bool = False
    hint: str = ""
    after_restart: Callable[[], str | None] | None = None
    process: ProcessChild | None = None
    crashes: list[float] = field(default_factory=list)
    restart_at: float | None = None
    done: bool = False


class ProcessChild:
    """A ``racewire`` sub-command in a process group of its own."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True)

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        _stop_processes([self.proc] if self.proc is not None else [])


@dataclass
class Policy:
    max_crashes: int
    window_s: float
    backoff_s: float
    backoff_max_s: float

    def delay(self, crashes: int) -> float:
        """Exponential backoff: ``backoff_s`` after the first crash in the window, doubling."""
        return float(min(self.backoff_max_s, self.backoff_s * 2 ** max(0, crashes - 1)))


class Supervisor:
    """Restarts crashed children with backoff; gives up on repeated fast crashes."""

    def __init__(self, policy: Policy, say: Callable[[str], None] = _step) -> None:
        self.policy = policy
        self.say = say
        self.children: list[Child] = []
        self.gave_up: str | None = None

    def add(self, child: Child, *, start: bool = True) -> Child:
        if start:
            self.say(f"starting {child.name} ...")
            child.start()
        self.children.append(child)
        return child

    def check(self, now: float | None = None) -> bool:
        """One round: notice exits, restart what is due. False once it gave up."""
        now = time.monotonic() if now is None else now
        for child in self.children:
            if child.done:
                continue
            if child.restart_at is None:
                code = child.poll()
                if code is None:
                    continue
                if code == 0 and child.done_on_success:
                    child.done = True
                    continue
                if not self._crashed(child, code, now):
                    return False
            elif now >= child.restart_at:
                child.restart_at = None
                try:
                    child.start()
                except Exception as exc:  # e.g. an embedded server that cannot start again
                    self.say(f"{child.name} could not be started again: {exc}")
                    if not self._crashed(child, 1, now):
                        return False
                    continue
                if child.after_restart is not None:
                    try:
                        note = child.after_restart()
                    except Exception as exc:
                        self.say(f"{child.name} is back but not ready: {exc}")
                    else:
                        if note:
                            self.say(note)
        return True

    def _crashed(self, child: Child, code: int, now: float) -> bool:
        window = self.policy.window_s
        child.crashes = [t for t in child.crashes if now - t < window] + [now]
        if len(child.crashes) >= self.policy.max_crashes:
            self.gave_up = (
                f"{child.name} crashed {len(child.crashes)} times within {window:g} s (last exit code {code}); "
                f"stopping everything. {child.hint or 'Its output above says why.'} "
                "(RACEWIRE_RESTART_MAX_CRASHES and RACEWIRE_RESTART_WINDOW_S set this limit.)"
            )
            self.say(self.gave_up)
            return False
        delay = self.policy.delay(len(child.crashes))
        self.say(f"{child.name} exited with code {code}; restarting it (attempt {len(child.crashes)}) "
                 f"in {delay:.1f} s")
        child.stop()
        child.restart_at = now + delay
        return True

    def stop_all(self) -> None:
        """Stop every process child together (SIGTERM, then SIGKILL after a grace period)."""
        _stop_processes([c.process.proc for c in self.children if c.process is not None and c.process.proc])


def _stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        # the whole group: a child's own children (a dataflow cluster's workers) go with it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --------------------------------------------------------------------------------------------
# the command


def _fresh_start(data: Path, spool_dir: Path) -> None:
    """Discard what refers to the previous run's broker (see the module docstring)."""
    recovery = data / "recovery"
    if recovery.is_dir() and any(recovery.iterdir()):
        _step(f"the embedded broker keeps its data in memory and starts empty: discarding the dataflow's "
              f"recovery state of the previous run ({recovery}), whose offsets belong to the old broker")
        shutil.rmtree(recovery)
    spools = sorted(spool_dir.glob("*.sqlite3*")) if spool_dir.is_dir() else []
    if spools:
        _step(f"discarding {len(spools)} producer spool file(s) of the previous run in {spool_dir} "
              "(their records belong to the old broker's races)")
        for path in [*spools, *spool_dir.glob("*.lock")]:
            path.unlink(missing_ok=True)


def _service_child(name: str, server: Any, after_restart: Callable[[], str | None] | None = None) -> Child:
    def start() -> None:
        server.stop()
        server.start()

    return Child(name=name, start=start, poll=server.exit_code, stop=lambda: None, after_restart=after_restart,
                 hint=f"Its log is {server.log_path}.")


def run(args: argparse.Namespace) -> int:
    from dataflows.connectors.producer import ProducerOptions
    from infra.registry import RegistryServer
    from infra.services import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis, ServiceError
    from infra.topics import TopicError, create_topics, partition_mismatches
    from schemas.settings import load_settings

    s = load_settings(workers=args.workers)
    data = s.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    supervisor = Supervisor(Policy(s.restart_max_crashes, s.restart_window_s, s.restart_backoff_s,
                                   s.restart_backoff_max_s))
    services: list[Child] = []
    options = ProducerOptions.from_settings(s)
    with contextlib.ExitStack() as stack:
        try:
            bootstrap = s.kafka_bootstrap
            if not bootstrap:
                _step(f"starting the embedded Kafka-compatible broker on port {s.kafka_port} ...")
                kafka = stack.enter_context(EmbeddedKafka(port=s.kafka_port, data_dir=data / "kafka"))
                bootstrap = kafka.bootstrap
                _fresh_start(data, options.spool_dir)  # once the port was free: no other run uses this data

                def topics_again(kafka: EmbeddedKafka = kafka) -> str:
                    create_topics(kafka.bootstrap, partitions=s.input_partitions)
                    return (f"the embedded Kafka broker is back on port {kafka.port} with its topics "
                            f"({s.input_partitions} partitions each); producers deliver what they spooled")

                services.append(_service_child("the embedded Kafka broker", kafka, topics_again))
            redis_url = s.redis_url
            if not redis_url:
                _step(f"starting the embedded Redis-compatible server on port {s.redis_port} ...")
                redis_server = stack.enter_context(EmbeddedRedis(port=s.redis_port, data_dir=data / "redis"))
                redis_url = redis_server.url
                services.append(_service_child("the embedded Redis-compatible server", redis_server))
            database_url = s.database_url
            if not database_url:
                _step(f"starting the embedded PostgreSQL on port {s.postgres_port} ...")
                postgres = stack.enter_context(EmbeddedPostgres(port=s.postgres_port, data_dir=data / "postgres"))
                database_url = postgres.url
                services.append(_service_child("the embedded PostgreSQL", postgres))
            registry_url = s.schema_registry_url
            if not registry_url:
                _step(f"starting the schema registry on port {s.registry_port} ...")
                registry = RegistryServer(data_dir=data, port=s.registry_port)
                registry.start()
                stack.callback(registry.stop)
                registry_url = registry.url

                def restart_registry(registry: RegistryServer = registry) -> None:
                    registry.stop()
                    registry.start()

                def registry_exit(registry: RegistryServer = registry) -> int | None:
                    return None if registry.running else 1  # its thread ended

                services.append(Child("the schema registry", restart_registry, registry_exit, lambda: None))
        except ServiceError as exc:
            print(f"racewire up: {exc}", file=sys.stderr)
            return 2
        _step("creating topics ...")
        try:
            create_topics(bootstrap, partitions=s.input_partitions)
            for mismatch in partition_mismatches(bootstrap, s.input_partitions):
                _step(f"warning: {mismatch.message()}")
        except TopicError as exc:
            print(f"racewire up: {exc}", file=sys.stderr)
            return 2
        for service in services:
            supervisor.add(service, start=False)
        env = {**os.environ, "RACEWIRE_KAFKA_BOOTSTRAP": bootstrap, "RACEWIRE_REDIS_URL": redis_url,
               "RACEWIRE_DATABASE_URL": database_url, "RACEWIRE_SCHEMA_REGISTRY_URL": registry_url,
               "RACEWIRE_DATA_DIR": str(data)}
        cli = [sys.executable, "-m", "infra.cli"]

        def spawn(name: str, argv: list[str], **kw: Any) -> None:
            child = ProcessChild([*cli, *argv], env)
            supervisor.add(Child(name=name, start=child.start, poll=child.poll, stop=child.stop, process=child, **kw))

        spawn("the race dataflow", ["flow", "race", "--workers", str(s.workers),
                                    "--recovery-dir", str(data / "recovery")])
        spawn("the serving layer", ["serve", "--port", str(s.http_port)],
              hint=f"Is port {s.http_port} free? (RACEWIRE_HTTP_PORT moves it.)")
        if args.replay is not None:
            threading.Thread(target=_replay, args=(args, bootstrap, registry_url, options, stop), daemon=True,
                             name="replay").start()
        elif not args.no_race:
            race_id = args.race_id or f"sim-{args.seed}"
            spawn(f"simulated race {race_id}", ["simulate", "--race-id", race_id, "--seed", str(args.seed),
                                               "--laps", str(args.laps), "--speed", str(args.speed)],
                  done_on_success=True)
        print(f"\n  racewire is up: http://127.0.0.1:{s.http_port}/\n", flush=True)
        try:
            while not stop.is_set():
                if not supervisor.check():
                    break
                stop.wait(SUPERVISE_EVERY_S)
        finally:
            _step("stopping ...")
            supervisor.stop_all()
    return 1 if supervisor.gave_up else 0


def _replay(args: argparse.Namespace, bootstrap: str, registry_url: str, options: Any,
            stop: threading.Event) -> None:
    """Produce a real race from a lap table to the running system (the dataflow is already up)."""
    from schemas.codec import Codec, make_registry_client
    from simulator.sources.laptables import load_race
    from simulator.sources.options import parse_speed
    from simulator.sources.produce import produce_race

    try:
        race = load_race(args.replay, args.results, None, None, args.race_id)
        speed = parse_speed(str(args.speed))
        _step(f"replaying {race.race_id} from {args.replay} at speed {args.speed} ...")
        produce_race(race, {"bootstrap.servers": bootstrap}, Codec(make_registry_client(registry_url)), speed,
                     options=options)
        _step(f"replay of {race.race_id} produced")
    except Exception as exc:  # report and stop: a bad file must not leave the system half-running
        print(f"racewire up: replay failed: {exc}", file=sys.stderr)
        stop.set()
