"""The ``racewire`` command: one entry point, one sub-command per deployable or tool.

Sub-commands import their modules lazily, so ``racewire --help`` is fast and a missing optional
piece only affects its own command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

# sub-command → module (or ``module:name``) that provides ``add_arguments(parser)`` and ``run(args) -> int``
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("infra.up", "Run the whole system: embedded services, dataflow, serving and a simulated race."),
    "simulate": ("simulator.sources.synthetic", "Run a synthetic race and produce it to the input topics."),
    "flow": ("infra.flow_cli", "Run a dataflow (e.g. `racewire flow race --workers 2`)."),
    "serve": ("infra.serve_cli", "Run the API and the live web leaderboard."),
    "registry": ("infra.registry.server", "Run racewire's own Confluent-compatible schema registry."),
    "topics": ("infra.topics", "Create racewire's topics on the broker."),
    "bench": ("infra.bench.cli", "Benchmarks that print JSON (pipeline, ...)."),
    "replay": ("infra.pipeline_run:REPLAY", "Replay a real race from a lap table through the pipeline."),
    "verify": ("simulator.verify", "Compare a replay report with official results."),
    "livetiming": ("infra.pipeline_run:LIVETIMING", "Replay a live-timing feed capture through the pipeline."),
    "live": ("infra.live_cli", "Follow the live-timing service as a session happens, recording it."),
    "feed-server": ("infra.feed_server", "Play a live-timing capture back over the service's protocol."),
    "rebuild-cache": ("infra.rebuild_cache", "Restore a race's live Redis state from PostgreSQL."),
    "train": ("strategy.train", "Train the strategy models from lap tables and write versioned artifacts."),
    "evaluate": ("strategy.evaluate", "Lap-time model vs a naive baseline on held-out races (JSON)."),
    "drill": ("infra.drills.cli", "Fault drills against the real system; one JSON line per drill."),
}


def _command(target: str) -> Any:
    """A command's module (``add_arguments`` and ``run``), or ``module:name`` for an object in it."""
    module, _, name = target.partition(":")
    found = importlib.import_module(module)
    return getattr(found, name) if name else found


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="racewire", description="Real-time F1 race intelligence.")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-format", choices=("json", "text"), default=None,
                        help="log lines as JSON objects or as text (default: text for `up`, JSON for the rest)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # only import the module of the command being run
            _command(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser(argv).parse_args(argv)
    from infra.logs import configure

    log_format = args.log_format or ("text" if args.command == "up" else "json")
    configure(json=log_format == "json", level=args.log_level)
    return int(_command(COMMANDS[args.command][0]).run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
