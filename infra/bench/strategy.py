"""``racewire bench strategy``: Monte Carlo throughput and per-lap call latency.

Builds a plausible field (gaps spread over the field, a mix of compounds and tyre ages, lapped
back-markers) ``--laps`` laps from the end of a race, warms the kernels (compile or load from
Numba's cache, timed as ``compile_s``), then times ``--sims`` full interacting simulations
(median of ``--repeat``) on Numba's threads and :func:`strategy.calls.recommend` for the whole
field on one thread.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import time
from typing import Any

import numpy as np


def add_subcommands(sub: Any) -> None:
    p = sub.add_parser("strategy", help="Monte Carlo race simulations per second and per-lap call latency")
    p.add_argument("--sims", type=int, default=10000, help="simulations per timed run")
    p.add_argument("--cars", type=int, default=20)
    p.add_argument("--laps", type=int, default=50, help="laps still to run")
    p.add_argument("--repeat", type=int, default=5, help="timed runs (the median is reported)")
    p.add_argument("--call-sims", type=int, default=None, help="simulations per recommend (default: its default)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.set_defaults(bench_func=bench_strategy)


def bench_field(cars: int, laps_left: int, seed: int = 1) -> tuple[Any, Any]:
    """A plausible ``cars``-car field with ``laps_left`` laps to go, and a typical model."""
    from strategy.montecarlo import FieldState, RaceModel

    rng = np.random.default_rng(seed)
    lap = max(laps_left // 4, 5)
    total = lap + laps_left
    model = RaceModel.typical(total)
    compound = rng.choice([0, 1, 2], size=cars, p=[0.3, 0.45, 0.25])
    stopped = rng.random(cars) < 0.25  # a few cars already made their stop
    age = np.where(stopped, rng.integers(1, 5, cars), np.minimum(lap, rng.integers(lap - 3, lap + 1, cars)))
    car_pace = 91.0 + np.sort(rng.normal(0.0, 0.5, cars)) + np.linspace(0.0, 1.2, cars)
    gaps = np.concatenate([[0.0], np.cumsum(rng.gamma(1.5, 1.3, cars - 1))])
    gaps[-2:] += car_pace[0]  # two back-markers a lap down
    c = compound
    pace = car_pace + model.compound_offset_s[c] + model.deg_linear_s[c] * age + model.deg_quadratic_s[c] * age**2
    used = (1 << c) | np.where(stopped, 1 << ((c + 1) % 3), 0)
    field = FieldState(
        lap=lap, total_laps=total, numbers=np.arange(1, cars + 1), gap_s=gaps, compound=c, tyre_age=age,
        pace_s=pace, used_dry=used, stops=stopped.astype(np.int32), active=np.ones(cars, bool),
        codes=tuple(f"C{i + 1:02d}" for i in range(cars)))
    return field, model


def bench_strategy(args: argparse.Namespace) -> dict[str, Any]:
    import numba

    from strategy.calls import recommend
    from strategy.montecarlo import expected_plans, simulate

    field, model = bench_field(args.cars, args.laps, args.seed)
    t = time.perf_counter()
    plans = expected_plans(field, model)
    simulate(field, model, plans, n_sims=8, seed=args.seed)
    call_kw = {} if args.call_sims is None else {"n_sims": args.call_sims}
    recommend(field, model, seed=args.seed, **call_kw)
    compile_s = time.perf_counter() - t

    runs = []
    for r in range(max(args.repeat, 1)):
        t = time.perf_counter()
        res = simulate(field, model, plans, n_sims=args.sims, seed=args.seed + r)
        runs.append(time.perf_counter() - t)
    seconds = statistics.median(runs)

    threads = numba.get_num_threads()
    numba.set_num_threads(1)  # the dataflow calls recommend from one thread
    try:
        call_runs = []
        for r in range(max(args.repeat, 1) * 4):
            t = time.perf_counter()
            calls = recommend(field, model, seed=args.seed + r, **call_kw)
            call_runs.append(time.perf_counter() - t)
    finally:
        numba.set_num_threads(threads)
    actions: dict[str, int] = {}
    for c in calls:
        actions[c.action] = actions.get(c.action, 0) + 1
    return {
        "sims": args.sims,
        "laps": args.laps,
        "cars": args.cars,
        "seconds": round(seconds, 4),
        "sims_per_s": round(args.sims / seconds),
        "car_laps_per_s": round(args.sims * args.cars * args.laps / seconds),
        "runs_s": [round(x, 4) for x in runs],
        "threads": threads,
        "threading_layer": numba.threading_layer(),
        "compile_s": round(compile_s, 2),
        "calls_ms": round(statistics.median(call_runs) * 1e3, 2),
        "calls_ms_p90": round(float(np.quantile(call_runs, 0.9)) * 1e3, 2),
        "call_sims": call_kw.get("n_sims", inspect.signature(recommend).parameters["n_sims"].default),
        "call_actions": actions,
        "retired_share": round(float(res.retired.mean()), 4),
        "cpu_count": os.cpu_count(),
    }
