"""``racewire up``: the whole system on one machine.

With no service URLs configured it starts embedded servers from Python packages (a
Kafka-compatible broker, a Redis-compatible server, PostgreSQL, racewire's schema registry),
creates the topics, then runs the race dataflow (with recovery), the serving layer and a race —
simulated, or a real one replayed with ``--replay PATH`` — prints the URL and stops everything
on Ctrl-C or SIGTERM, leaving no process behind. With ``RACEWIRE_KAFKA_BOOTSTRAP``,
``RACEWIRE_REDIS_URL``, ``RACEWIRE_DATABASE_URL`` and ``RACEWIRE_SCHEMA_REGISTRY_URL`` set it uses
those and starts only racewire's own processes. Every data folder lives under
``RACEWIRE_DATA_DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("racewire.up")


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


def run(args: argparse.Namespace) -> int:
    from infra.registry import RegistryServer
    from infra.services import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis, ServiceError
    from infra.settings import load_settings
    from infra.topics import create_topics

    s = load_settings(workers=args.workers)
    data = s.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    with contextlib.ExitStack() as stack:
        try:
            bootstrap = s.kafka_bootstrap
            if not bootstrap:
                _step(f"starting the embedded Kafka-compatible broker on port {s.kafka_port} ...")
                bootstrap = stack.enter_context(EmbeddedKafka(port=s.kafka_port, data_dir=data / "kafka")).bootstrap
            redis_url = s.redis_url
            if not redis_url:
                _step(f"starting the embedded Redis-compatible server on port {s.redis_port} ...")
                redis_url = stack.enter_context(EmbeddedRedis(port=s.redis_port, data_dir=data / "redis")).url
            database_url = s.database_url
            if not database_url:
                _step(f"starting the embedded PostgreSQL on port {s.postgres_port} ...")
                database_url = stack.enter_context(
                    EmbeddedPostgres(port=s.postgres_port, data_dir=data / "postgres")).url
            registry_url = s.schema_registry_url
            if not registry_url:
                _step(f"starting the schema registry on port {s.registry_port} ...")
                registry = RegistryServer(data_dir=data, port=s.registry_port)
                registry.start()
                stack.callback(registry.stop)
                registry_url = registry.url
        except ServiceError as exc:
            print(f"racewire up: {exc}", file=sys.stderr)
            return 2
        _step("creating topics ...")
        create_topics(bootstrap, partitions=s.input_partitions)
        env = {**os.environ, "RACEWIRE_KAFKA_BOOTSTRAP": bootstrap, "RACEWIRE_REDIS_URL": redis_url,
               "RACEWIRE_DATABASE_URL": database_url, "RACEWIRE_SCHEMA_REGISTRY_URL": registry_url}
        cli = [sys.executable, "-m", "infra.cli"]

        def spawn(name: str, argv: list[str]) -> None:
            _step(f"starting {name} ...")
            children.append((name, subprocess.Popen([*cli, *argv], env=env, start_new_session=True)))

        spawn("the race dataflow", ["flow", "race", "--workers", str(s.workers),
                                    "--recovery-dir", str(data / "recovery")])
        serving = Path(__file__).resolve().parent.parent / "serving" / "cli.py"
        if serving.exists():
            spawn("the serving layer", ["serve", "--port", str(s.http_port)])
        if args.replay is not None:
            threading.Thread(target=_replay, args=(args, bootstrap, registry_url, stop), daemon=True,
                             name="replay").start()
        elif not args.no_race:
            race_id = args.race_id or f"sim-{args.seed}"
            spawn(f"simulated race {race_id}", ["simulate", "--race-id", race_id, "--seed", str(args.seed),
                                               "--laps", str(args.laps), "--speed", str(args.speed)])
        if serving.exists():
            print(f"\n  racewire is up: http://127.0.0.1:{s.http_port}/\n", flush=True)
        else:
            print(f"\n  racewire is up: live state in Redis at {redis_url} (race:<id>:state)\n", flush=True)
        try:
            while not stop.is_set():
                for name, proc in children:
                    if proc.poll() not in (None, 0):
                        _step(f"{name} exited with code {proc.returncode}; stopping")
                        stop.set()
                stop.wait(0.5)
        finally:
            _step("stopping ...")
            _stop_all(children)
    return 0


def _replay(args: argparse.Namespace, bootstrap: str, registry_url: str, stop: threading.Event) -> None:
    """Produce a real race from a lap table to the running system (the dataflow is already up)."""
    from schemas.codec import Codec, make_registry_client
    from simulator.producer import produce_race
    from simulator.replay import load_race

    try:
        race = load_race(args.replay, args.results, None, None, args.race_id)
        speed = None if str(args.speed) == "max" else float(args.speed)
        _step(f"replaying {race.race_id} from {args.replay} at speed {args.speed} ...")
        produce_race(race, {"bootstrap.servers": bootstrap}, Codec(make_registry_client(registry_url)), speed)
        _step(f"replay of {race.race_id} produced")
    except Exception as exc:  # report and stop: a bad file must not leave the system half-running
        print(f"racewire up: replay failed: {exc}", file=sys.stderr)
        stop.set()


def _stop_all(children: list[tuple[str, Any]]) -> None:
    for _name, proc in children:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for _name, proc in children:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
