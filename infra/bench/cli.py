"""``racewire bench …``: every benchmark of the project, each printing one JSON object.

Each module of :mod:`infra.bench` adds its subcommands here and sets ``bench_func``; what they share
(the services they run against, percentiles, peak RSS, the app in a thread) is
:mod:`infra.bench.harness`. Benchmarks compare builds by ratio or back to back on one machine;
no test asserts a time.
"""

from __future__ import annotations

import argparse
import json

from infra.bench import history, idle, live, pipeline, serving, strategy

#: every benchmark module; each one's ``add_subcommands(sub)`` registers its commands
MODULES = (pipeline, serving, live, history, strategy, idle)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for module in MODULES:
        module.add_subcommands(sub)


def run(args: argparse.Namespace) -> int:
    result = args.bench_func(args)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0
