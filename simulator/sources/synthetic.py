"""The synthetic race as a source: :class:`SyntheticRace` wraps the race model of
:mod:`simulator.race` (deterministic for a seed, with its ground truth), and ``racewire
simulate`` runs one or more of them and produces them to the input topics.

Examples::

    racewire simulate --race-id sim-1 --seed 1 --laps 50 --speed 10 --truth-json truth.json
    racewire simulate --seed 7 --laps 20 --speed max --bootstrap localhost:19092 \\
        --registry-url http://localhost:18081
    racewire simulate --seed 3 --dry-run --truth-json truth.json   # no Kafka: records + truth only
    racewire simulate --races 4 --speed max                        # 4 races side by side

The broker and the schema registry default to ``RACEWIRE_KAFKA_BOOTSTRAP`` and
``RACEWIRE_SCHEMA_REGISTRY_URL``. Progress is logged every few laps of the leader; a JSON
summary is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.model import InputRecord, Lap, Session
from simulator.race import RaceSimulator
from simulator.sources.base import codes_of
from simulator.sources.options import add_kafka_arguments, kafka_target, parse_speed

log = logging.getLogger("racewire.simulate")

PROGRESS_EVERY_LAPS = 5
"""Log a progress line each time a race's leader completes a multiple of this many laps."""


class SyntheticRace:
    """A synthetic race (:class:`~simulator.race.RaceSimulator`) as a source.

    >>> race = SyntheticRace("sim-doc", seed=7, laps=2)
    >>> first = next(race.records())
    >>> type(first).__name__, race.codes() == {d.number: d.code for d in first.drivers}
    ('Session', True)
    """

    def __init__(self, race_id: str, seed: int, laps: int, grid_file: str | Path | None = None) -> None:
        self.race_id = race_id
        self.model = RaceSimulator(race_id, seed, laps, grid_file)

    @property
    def session(self) -> Session:
        return self.model.session

    def records(self) -> Iterator[InputRecord]:
        """Every record of the race in session-time order (a fresh, identical run per call)."""
        return self.model.records()

    def codes(self) -> dict[int, str]:
        return codes_of(self.model.session)

    def truth(self) -> dict[str, Any]:
        """Ground truth of the race; available once :meth:`records` has been exhausted."""
        return self.model.truth()


def side_by_side(race_id: str, seed: int, laps: int, races: int,
                 grid_file: str | Path | None = None) -> list[SyntheticRace]:
    """``races`` races to run at once: ids ``RACE_ID-1..``, seeds ``SEED..SEED+N-1`` (one race:
    ``race_id`` and ``seed`` themselves)."""
    if races == 1:
        return [SyntheticRace(race_id, seed, laps, grid_file)]
    return [SyntheticRace(f"{race_id}-{i + 1}", seed + i, laps, grid_file) for i in range(races)]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--race-id", default="sim-1", help="race id (default sim-1)")
    parser.add_argument("--seed", type=int, default=1, help="random seed; same seed, same race")
    parser.add_argument("--laps", type=_positive_int, default=50, help="race distance (default 50)")
    parser.add_argument(
        "--speed", type=parse_speed, default=None,
        help="1 = real time, 10 = ten times faster, max = as fast as possible (default max)",
    )
    parser.add_argument("--truth-json", type=Path, help="write the ground truth (JSON) here")
    add_kafka_arguments(parser)
    parser.add_argument("--grid-file", type=Path, help="entry list JSON (default: bundled grid)")
    parser.add_argument(
        "--races", type=_positive_int, default=1,
        help="run N races side by side (ids RACE-ID-1.., seeds SEED..SEED+N-1); truth is a list",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="only generate the race (and its truth); no Kafka"
    )


class _Progress:
    """Logs each race's leader every few laps."""

    def __init__(self, laps: int) -> None:
        self.laps = laps
        self.lead: dict[str, int] = {}
        self.counts: Counter[str] = Counter()

    def __call__(self, record: InputRecord) -> None:
        self.counts[type(record).__name__] += 1
        if not isinstance(record, Lap) or record.lap <= self.lead.get(record.race_id, 0):
            return
        self.lead[record.race_id] = record.lap
        if record.lap % PROGRESS_EVERY_LAPS == 0 or record.lap == self.laps:
            log.info(
                "race %s: leader #%d completed lap %d/%d at session time %s",
                record.race_id, record.driver_number, record.lap, self.laps,
                _clock(record.crossing_ms),
            )


def run(args: argparse.Namespace) -> int:
    sims = side_by_side(args.race_id, args.seed, args.laps, args.races, args.grid_file)
    progress = _Progress(args.laps)
    started = time.monotonic()
    if args.dry_run:
        for sim in sims:
            for record in sim.records():
                progress(record)
        counts: dict[str, int] = dict(progress.counts)
    else:
        target = kafka_target(args, "simulate")
        if target is None:
            return 2
        bootstrap, registry_url, settings = target
        # imported here so that --dry-run needs neither Kafka nor a registry client
        from dataflows.connectors.producer import ProducerOptions
        from schemas.codec import Codec, make_registry_client
        from simulator.sources.produce import DeliveryError, produce_many, produce_race

        codec = Codec(make_registry_client(registry_url))
        config = {"bootstrap.servers": bootstrap}
        # spooled to disk while the broker is away; topics recreated with the configured count
        options = ProducerOptions.from_settings(settings)
        log.info("producing %d race(s) to %s (registry %s), speed %s", len(sims), bootstrap,
                 registry_url, "max" if args.speed is None else f"x{args.speed:g}")
        try:
            if len(sims) == 1:
                counts = produce_race(sims[0], config, codec, args.speed, args.topics_prefix,
                                      progress, options)
            else:
                counts = produce_many(sims, config, codec, args.speed, args.topics_prefix,
                                      progress, options)
        except DeliveryError as exc:
            log.error("%s", exc)
            return 1
    elapsed = time.monotonic() - started
    truths = [sim.truth() for sim in sims]
    if args.truth_json is not None:
        args.truth_json.parent.mkdir(parents=True, exist_ok=True)
        payload: Any = truths[0] if len(truths) == 1 else truths
        args.truth_json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    total = sum(counts.values())
    summary = {
        "races": [_race_summary(t) for t in truths],
        "records": counts,
        "total_records": total,
        "elapsed_s": round(elapsed, 3),
        "records_per_s": round(total / elapsed) if elapsed > 0 else None,
        "dry_run": bool(args.dry_run),
        "truth_json": None if args.truth_json is None else str(args.truth_json),
    }
    print(json.dumps(summary))
    return 0


def _race_summary(truth: dict[str, Any]) -> dict[str, Any]:
    winner = truth["classification"][0] if truth["classification"] else None
    kinds = Counter(o["kind"] for o in truth["overtakes"])
    return {
        "race_id": truth["race_id"],
        "seed": truth["seed"],
        "laps": truth["laps"],
        "winner": None if winner is None else winner["code"],
        "fastest_lap": truth["fastest_lap"],
        "last_lap_hero": truth["last_lap_hero"],
        "overtakes": dict(kinds),
        "pit_stops": len(truth["pit_stops"]),
        "retirements": [r["code"] for r in truth["retirements"]],
        "neutralisations": [p["status"] for p in truth["track_status_periods"]],
    }


def _clock(ms: int) -> str:
    """Session time as ``H:MM:SS``."""
    s = ms // 1000
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
