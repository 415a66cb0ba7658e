"""``racewire topics``: create racewire's topics on a Kafka-compatible broker, with the configured
partition count, and name every existing topic whose partition count differs.

The work is done by :mod:`dataflows.connectors.topics` (every producer uses it too, to recreate
the topics after a broker came back empty); this module is the command and re-exports it.

    racewire topics --bootstrap 127.0.0.1:19092 --partitions 8

It prints one JSON line (``created``, ``mismatched``) and exits 1 when a topic exists with
another partition count (each one is named, with what to do) or the broker cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import logging

from dataflows.connectors.topics import (
    ALL_TOPICS,
    TOPIC_CONFIGS,
    TopicError,
    TopicMismatch,
    create_topics,
    partition_mismatches,
)
from schemas.settings import load_settings

__all__ = ["ALL_TOPICS", "TOPIC_CONFIGS", "TopicError", "TopicMismatch", "create_topics", "partition_mismatches"]

log = logging.getLogger("racewire.topics")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: RACEWIRE_KAFKA_BOOTSTRAP, "
        "else the embedded broker at 127.0.0.1:RACEWIRE_KAFKA_PORT)",
    )
    parser.add_argument(
        "--partitions",
        type=_positive_int,
        metavar="N",
        help="partitions per topic (default: RACEWIRE_INPUT_PARTITIONS, 8)",
    )
    parser.add_argument(
        "--topic",
        action="append",
        dest="topics",
        metavar="NAME",
        help="create only this topic (repeatable); default: all of racewire's topics",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker (default 30)")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(kafka_bootstrap=args.bootstrap, input_partitions=args.partitions)
    bootstrap = settings.kafka_bootstrap or f"127.0.0.1:{settings.kafka_port}"
    unknown = sorted(set(args.topics or ()) - set(ALL_TOPICS))
    if unknown:
        log.warning("creating topics racewire does not use: %s", ", ".join(unknown))
    try:
        created = create_topics(bootstrap, settings.input_partitions, args.topics, timeout=args.timeout)
        mismatched = partition_mismatches(bootstrap, settings.input_partitions, args.topics)
    except (TopicError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    for m in mismatched:
        log.error("%s", m.message())
    print(
        json.dumps(
            {
                "bootstrap": bootstrap,
                "partitions": settings.input_partitions,
                "topics": list(args.topics or ALL_TOPICS),
                "created": created,
                "mismatched": [m.to_dict() for m in mismatched],
            }
        )
    )
    return 1 if mismatched else 0
