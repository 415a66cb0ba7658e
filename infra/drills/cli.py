"""``racewire drill``: run fault drills against the real system and print one JSON line per drill.

    racewire drill all --json                  # every drill, CI scale (a few laps at high speed)
    racewire drill kill-flow --scale full      # a 30-lap race, real 20 s outages
    racewire drill redis-outage --laps 10 --speed 15 --seed 3 --redis-persist

Each drill first needs an uninterrupted run of the same race (the reference): it is run once
per invocation, or read from ``--reference FILE`` when that file holds one for the same race
(and written there otherwise). The exit code is 0 when every drill passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

log = logging.getLogger("racewire.drill")

CHOICES = ("all", "kill-flow", "redis-flush", "redis-outage", "postgres-outage", "broker-restart", "long-session",
           "control")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("drill", choices=CHOICES,
                        help="which drill (all: every one but control, the reference run once; control: "
                             "the race again without a fault, which must pass)")
    parser.add_argument("--json", action="store_true", help="print only the JSON lines, one per drill")
    parser.add_argument("--scale", choices=("ci", "full"), default="ci",
                        help="ci: 8 laps at speed 20, 6 s outages; full: 30 laps at speed 20, 20 s outages")
    parser.add_argument("--laps", type=int, default=None, help="race distance (default: the scale's)")
    parser.add_argument("--speed", type=float, default=None, help="race speed-up (default: the scale's)")
    parser.add_argument("--seed", type=int, default=1, help="race seed; the race id is drill-SEED")
    parser.add_argument("--outage-s", type=float, default=None, help="seconds a stopped service stays down")
    parser.add_argument("--redis-persist", action="store_true",
                        help="redis-outage with RDB + append-only file (Redis comes back with its data)")
    parser.add_argument("--reference", type=Path, default=None,
                        help="JSON file with the uninterrupted run of the same race: read if it matches, else written")
    parser.add_argument("--keep-dir", action="store_true", help="keep each run's folder (service and racewire up logs)")


def _interrupted(_signum: int, _frame: Any) -> NoReturn:
    raise KeyboardInterrupt  # unwinds every run: services and racewire up are stopped on the way out


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from infra.drills.runner import DRILLS, SCALES, DrillError, RaceSpec, reference, run_drill

    signal.signal(signal.SIGTERM, _interrupted)
    scale = SCALES[args.scale]
    if args.outage_s is not None:
        scale = replace(scale, outage_s=args.outage_s)
    spec = RaceSpec(args.seed, args.laps or scale.laps, args.speed or scale.speed)
    names = list(DRILLS) if args.drill == "all" else [args.drill]
    try:
        ref = _load_reference(args.reference, spec)
        if ref is None:
            ref = reference(spec, scale, keep_dir=args.keep_dir)
            if args.reference is not None:
                args.reference.write_text(json.dumps(ref), encoding="utf-8")
        results = []
        for name in names:
            result = run_drill(name, spec, scale, ref, redis_persist=args.redis_persist, keep_dir=args.keep_dir)
            results.append(result)
            line = json.dumps(result.as_dict())
            if args.json:
                print(line, flush=True)
            else:
                verdict = "passed" if result.passed else "FAILED: " + "; ".join(result.details["failed_because"])
                print(f"{name}: {verdict} (lost {result.lost}, duplicated {result.duplicated}, wrong {result.wrong}, "
                      f"recovered_s {result.recovered_s}, {result.seconds:.0f} s)\n{line}", flush=True)
    except DrillError as exc:
        print(f"racewire drill: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("racewire drill: interrupted; every process it started has been stopped", file=sys.stderr)
        return 130
    return 0 if all(r.passed for r in results) else 1


def _load_reference(path: Path | None, spec: Any) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        ref = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring the reference in %s: %s", path, exc)
        return None
    if ref.get("spec") != spec.key():
        log.info("the reference in %s is of another race (%s); running a new one", path, ref.get("spec"))
        return None
    return dict(ref)
