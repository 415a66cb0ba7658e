"""``racewire evaluate``: the lap-time model vs a naive baseline on held-out races (JSON).

``racewire evaluate [--json] [--train PATH...] [--test PATH...]``. Defaults: train on the
``laps_pool`` Grands Prix of 2018, 2019 and 2020, test on those of 2021. The model is trained in
memory by exactly the training code (:func:`strategy.train.fit_lap_time`), with the same features
(:mod:`strategy.features`).

Scored laps (model and baseline on exactly the same laps): green flag (``TrackStatus`` exactly
``"1"``), a lap time, neither in- nor out-lap, not lap 1, and three previous green laps of that car
in the same stint. Baseline: the median of those three laps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from strategy import data, train
from strategy import features as F

DEFAULT_TRAIN_YEARS = (2018, 2019, 2020)
DEFAULT_TEST_YEARS = (2021,)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print only the JSON result (one line)")
    parser.add_argument(
        "--train",
        nargs="+",
        type=Path,
        default=None,
        help="training lap tables (default: laps_pool Grands Prix 2018-2020)",
    )
    parser.add_argument(
        "--test", nargs="+", type=Path, default=None, help="test lap tables (default: laps_pool Grands Prix 2021)"
    )


def evaluate(train_paths: Sequence[Path], test_paths: Sequence[Path], quiet: bool = False) -> dict[str, Any]:
    started = time.perf_counter()

    def say(msg: str) -> None:
        if not quiet:
            print(f"[evaluate] {msg}", file=sys.stderr, flush=True)

    for p in [*train_paths, *test_paths]:
        if not Path(p).exists():
            raise SystemExit(f"{p} not found: pass --train/--test lap tables (laps_pool format)")
    say(f"loading {len(train_paths)} training and {len(test_paths)} test tables")
    tr = data.load_laps(train_paths)
    te = data.load_laps(test_paths)
    overlap = set(tr["race"].unique().to_list()) & set(te["race"].unique().to_list())
    if overlap:
        raise SystemExit(f"train and test share races {sorted(overlap)[:3]}…: pass disjoint tables")
    tr_ctx, te_ctx = F.context_frame(tr), F.context_frame(te)
    say(f"training the lap-time model on {tr['race'].n_unique()} races")
    booster, vocab, rows = train.fit_lap_time(tr_ctx)
    say("predicting the test laps")
    metrics = train.evaluate_lap_time(booster, vocab, te_ctx)
    return {
        "model_mae_s": metrics["model_mae_s"],
        "baseline_mae_s": metrics["baseline_mae_s"],
        "improvement_pct": metrics["improvement_pct"],
        "laps": metrics["laps"],
        "baseline": "median of the driver's previous three green laps in the stint",
        "train_races": tr["race"].n_unique(),
        "train_laps": tr.height,
        "train_rows": rows,
        "test_races": te["race"].n_unique(),
        "test_laps": te.height,
        "train_files": [Path(p).name for p in train_paths],
        "test_files": [Path(p).name for p in test_paths],
        "seconds": round(time.perf_counter() - started, 1),
    }


def run(args: argparse.Namespace) -> int:
    train_paths = args.train or data.pool_files("grand_prix", DEFAULT_TRAIN_YEARS)
    test_paths = args.test or data.pool_files("grand_prix", DEFAULT_TEST_YEARS)
    if not train_paths or not test_paths:
        raise SystemExit("no lap tables found beside the project: pass --train PATH... --test PATH...")
    result = evaluate(train_paths, test_paths, quiet=False)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


__all__ = ["add_arguments", "evaluate", "run"]
