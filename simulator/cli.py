"""``racewire simulate``: run a synthetic race and produce it to the input topics.

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
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from schemas.model import InputRecord, Lap
from simulator.race import RaceSimulator

log = logging.getLogger("racewire.simulate")

PROGRESS_EVERY_LAPS = 5
"""Log a progress line each time a race's leader completes a multiple of this many laps."""


def _speed(text: str) -> float | None:
    if text.lower() in ("max", "inf"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed must be a number or 'max', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"speed must be positive, got {text!r}")
    return value


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
        "--speed", type=_speed, default=None,
        help="1 = real time, 10 = ten times faster, max = as fast as possible (default max)",
    )
    parser.add_argument("--truth-json", type=Path, help="write the ground truth (JSON) here")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default RACEWIRE_KAFKA_BOOTSTRAP)")
    parser.add_argument(
        "--registry-url", help="schema registry URL (default RACEWIRE_SCHEMA_REGISTRY_URL)"
    )
    parser.add_argument("--topics-prefix", default="", help="prefix for every topic name")
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
    if args.races == 1:
        sims = [RaceSimulator(args.race_id, args.seed, args.laps, args.grid_file)]
    else:
        sims = [
            RaceSimulator(f"{args.race_id}-{i + 1}", args.seed + i, args.laps, args.grid_file)
            for i in range(args.races)
        ]
    progress = _Progress(args.laps)
    started = time.monotonic()
    if args.dry_run:
        for sim in sims:
            for record in sim.records():
                progress(record)
        counts: dict[str, int] = dict(progress.counts)
    else:
        target = _kafka_target(args)
        if target is None:
            return 2
        bootstrap, registry_url, settings = target
        # imported here so that --dry-run needs neither Kafka nor a registry client
        from dataflows.connectors.producer import ProducerOptions
        from schemas.codec import Codec, make_registry_client
        from simulator.producer import DeliveryError, produce_many, produce_race

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


def _kafka_target(args: argparse.Namespace) -> tuple[str, str, Any] | None:
    """Bootstrap, registry and the settings: the flags, else the settings; ``None`` (logged) if unset."""
    from config.settings import load_settings

    settings = load_settings()
    bootstrap = args.bootstrap or settings.kafka_bootstrap
    registry_url = args.registry_url or settings.schema_registry_url
    missing = []
    if not bootstrap:
        missing.append("Kafka broker: pass --bootstrap HOST:PORT or set RACEWIRE_KAFKA_BOOTSTRAP")
    if not registry_url:
        missing.append(
            "schema registry: pass --registry-url URL (http://... or mock://...) "
            "or set RACEWIRE_SCHEMA_REGISTRY_URL"
        )
    for what in missing:
        print(f"racewire simulate: no {what} (or use --dry-run)", file=sys.stderr)
    if bootstrap and registry_url:
        return bootstrap, registry_url, settings
    return None


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
