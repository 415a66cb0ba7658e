"""A real race through the real pipeline: ``racewire replay`` (a lap table) and ``racewire
livetiming`` (a capture of the official feed) produce the race, run the race dataflow on it,
wait until the race is final in Redis and print the report read back from it
(:mod:`simulator.report`). The sources only build the records and add their own arguments
(:mod:`simulator.sources.laptables`, :mod:`simulator.sources.livetiming`); the options of a run through the pipeline
(speed, workers, report, timeout, dry run) and starting services are this layer's job."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import redis

from dataflows.connectors.producer import ProducerOptions
from dataflows.race.state import applied_of
from infra.flow_cli import flow_process
from infra.services.stack import services as benchmark_services
from infra.topics import create_topics
from schemas.codec import Codec, make_registry_client
from schemas.model import InputRecord, SessionKind
from schemas.redis_layout import state_key
from schemas.settings import load_settings
from simulator.report import (
    FLOW_TIMEOUT_S,
    SETTLE_S,
    build_report,
    clear_race,
    read_redis,
    read_strategy,
    write_report,
)
from simulator.sources import laptables, livetiming
from simulator.sources.base import Source
from simulator.sources.incremental import load_capture
from simulator.sources.laptables import ReplayError, load_race
from simulator.sources.livetiming import LiveTimingError
from simulator.sources.options import parse_speed
from simulator.sources.produce import produce_race

log = logging.getLogger("racewire.replay")


def wait_final(client: Any, race_id: str, records: int, proc: subprocess.Popen[bytes] | None,
               timeout_s: float) -> None:
    """Wait until the race's state in Redis is final (a session ordered by best lap: over) with
    ``records`` input records applied, or quiet with fewer (the rest were rejected)."""
    deadline = time.monotonic() + timeout_s
    stable_since: float | None = None
    last_applied = -1
    while time.monotonic() < deadline:
        raw = client.get(state_key(race_id))
        if raw is not None:
            doc = json.loads(raw)
            timed = SessionKind(doc.get("session_type") or "RACE").timed
            if doc.get("final") or (timed and doc.get("finished")):
                applied = applied_of(doc["version"])
                if applied >= records:
                    return
                # final, but some records were rejected (see f1.deadletter): wait until quiet
                if applied != last_applied:
                    last_applied, stable_since = applied, time.monotonic()
                elif stable_since is not None and time.monotonic() - stable_since > 5:
                    log.warning("race %s final with %d of %d records applied: some were rejected "
                                "(see f1.deadletter)", race_id, applied, records)
                    return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the race dataflow exited with {proc.returncode} before the race was final")
        time.sleep(0.2)
    raise TimeoutError(f"race {race_id} not final in Redis after {timeout_s:.0f} s")


def run_through_pipeline(
    source: Source,
    speed: float | None = None,
    workers: int = 1,
    timeout_s: float = FLOW_TIMEOUT_S,
    services: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Produce the race, run the race dataflow on it, wait until final; the report from Redis.

    ``services`` (``bootstrap``, ``redis_url``, ``registry_url``) defaults to the configured
    ``RACEWIRE_*`` services, or embedded ones started for this run.
    """
    if services is not None:
        return _run(source, speed, workers, timeout_s, services)
    with tempfile.TemporaryDirectory(prefix="racewire-replay-") as tmp, benchmark_services(Path(tmp)) as svc:
        return _run(source, speed, workers, timeout_s, svc)


def _run(source: Source, speed: float | None, workers: int, timeout_s: float,
         svc: dict[str, str]) -> dict[str, Any]:
    create_topics(svc["bootstrap"], partitions=max(4, 2 * workers))
    # spooled under RACEWIRE_DATA_DIR while the broker is away; the topics were just made
    options = dataclasses.replace(ProducerOptions.from_settings(load_settings()), partitions=None)
    codec = Codec(make_registry_client(svc["registry_url"]))
    codec.register_all()
    client = redis.Redis.from_url(svc["redis_url"])
    clear_race(client, source.race_id)
    count = 0

    def counted(_record: InputRecord) -> None:
        nonlocal count
        count += 1

    started = time.monotonic()
    with flow_process(svc["bootstrap"], svc["redis_url"], svc["registry_url"], workers,
                      load_settings().database_url) as proc:
        counts = produce_race(source, {"bootstrap.servers": svc["bootstrap"]}, codec, speed,
                              on_record=counted, options=options)
        log.info("race %s: produced %s in %.1f s; waiting for the dataflow", source.race_id, counts,
                 time.monotonic() - started)
        wait_final(client, source.race_id, count, proc, timeout_s)
        time.sleep(SETTLE_S)
        state, chart, events = read_redis(client, source.race_id)
        calls = read_strategy(client, source.race_id)
    log.info("race %s final in Redis after %.1f s", source.race_id, time.monotonic() - started)
    client.close()
    return {**build_report(source.race_id, source.codes(), state, chart, events), "strategy": calls}


def run_replay(args: Any) -> int:
    try:
        race = load_race(args.path, args.results, args.year, args.round_number, args.race_id)
    except (ReplayError, OSError) as exc:
        print(f"racewire replay: {exc}")
        return 2
    log.info("race %s: %d drivers, %d laps, %d lap records, %d race-control records", race.race_id,
             len(race.session.drivers), race.session.total_laps, len(race.laps), len(race.controls))
    if args.dry_run:
        print(json.dumps({"race_id": race.race_id, "laps": race.session.total_laps,
                          "lap_records": len(race.laps), "controls": len(race.controls)}))
        return 0
    report = run_through_pipeline(race, args.speed, args.workers, args.timeout)
    if args.output_json is not None:
        write_report(report, args.output_json)
    top = report["classification"][:3]
    print(json.dumps({"race_id": race.race_id, "podium": [c["driver"] for c in top],
                      "fastest_lap": report["fastest_lap"], "pit_stops": len(report["pit_stops"]),
                      "overtakes": len(report["overtakes"]),
                      "output_json": None if args.output_json is None else str(args.output_json)}))
    return 0


def run_livetiming(args: Any) -> int:
    try:
        race = load_capture(args.path, args.race_id)
    except (LiveTimingError, OSError) as exc:
        print(f"racewire livetiming: {exc}")
        return 2
    log.info("race %s: %d drivers, %d laps, %d lap records, %d race-control records", race.race_id,
             len(race.session.drivers), race.session.total_laps, len(race.laps), len(race.controls))
    if args.dry_run:
        print(json.dumps({"race_id": race.race_id, "laps": race.session.total_laps,
                          "drivers": len(race.session.drivers), "lap_records": len(race.laps),
                          "controls": len(race.controls)}))
        return 0
    report = run_through_pipeline(race, args.speed, args.workers, args.timeout)
    if args.output_json is not None:
        write_report(report, args.output_json)
    print(json.dumps({"race_id": race.race_id, "order": [c["driver"] for c in report["classification"]],
                      "fastest_lap": report["fastest_lap"], "pit_stops": len(report["pit_stops"]),
                      "overtakes": len(report["overtakes"]),
                      "output_json": None if args.output_json is None else str(args.output_json)}))
    return 0


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a run through the pipeline, after the source's own arguments."""
    parser.add_argument("--speed", type=parse_speed, default=None, help="1 = real time, N = N times, max (default)")
    parser.add_argument("--workers", type=int, default=1, help="dataflow worker processes (default 1)")
    parser.add_argument("--output-json", type=Path, help="write the report (read back from Redis) here")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the race to be final")
    parser.add_argument("--dry-run", action="store_true", help="only build the records and print a summary")


def _arguments(source_arguments: Any) -> Any:
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        source_arguments(parser)
        add_run_arguments(parser)
    return add_arguments


#: the commands (see ``infra.cli``): the source's arguments, then the run's, and the run from here
REPLAY = SimpleNamespace(add_arguments=_arguments(laptables.add_arguments), run=run_replay)
LIVETIMING = SimpleNamespace(add_arguments=_arguments(livetiming.add_arguments), run=run_livetiming)
