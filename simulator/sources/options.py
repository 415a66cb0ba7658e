"""Command-line options that the source commands share: ``--speed`` (:func:`parse_speed`) and
where records go (:func:`add_kafka_arguments`, :func:`kafka_target`: the flags, else the
settings). Importing this module loads no Kafka client, so ``--help`` and ``--dry-run`` stay
cheap."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dataflows.connectors.topics import bootstrap_open


def parse_speed(text: str) -> float | None:
    """The ``--speed`` argument: a positive factor (1 = real time), or ``max`` (``None``: as fast
    as possible).

    >>> parse_speed("10"), parse_speed("max")
    (10.0, None)
    """
    if text.lower() in ("max", "inf"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed must be a number or 'max', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"speed must be positive, got {text!r}")
    return value


def add_kafka_arguments(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap``, ``--registry-url`` and ``--topics-prefix``."""
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default RACEWIRE_KAFKA_BOOTSTRAP, else "
                                            "racewire up's embedded broker when it runs here)")
    parser.add_argument(
        "--registry-url", help="schema registry URL (default RACEWIRE_SCHEMA_REGISTRY_URL, else racewire up's "
                               "embedded registry when it runs here)"
    )
    parser.add_argument("--topics-prefix", default="", help="prefix for every topic name")


def kafka_target(args: argparse.Namespace, command: str) -> tuple[str, str, Any] | None:
    """Bootstrap, registry and the settings: the flags, else the settings, else the embedded
    services ``racewire up --no-race`` runs on this machine (when their ports answer); ``None``
    (said on stderr) if none."""
    from schemas.settings import load_settings

    settings = load_settings()
    bootstrap = args.bootstrap or settings.kafka_bootstrap or embedded("127.0.0.1", settings.kafka_port)
    registry_url = args.registry_url or settings.schema_registry_url
    if not registry_url and embedded("127.0.0.1", settings.registry_port):
        registry_url = f"http://127.0.0.1:{settings.registry_port}"
    missing = []
    if not bootstrap:
        missing.append("Kafka broker: pass --bootstrap HOST:PORT or set RACEWIRE_KAFKA_BOOTSTRAP "
                       f"(or run `racewire up --no-race`: its broker on port {settings.kafka_port})")
    if not registry_url:
        missing.append(
            "schema registry: pass --registry-url URL (http://... or mock://...) "
            "or set RACEWIRE_SCHEMA_REGISTRY_URL"
        )
    for what in missing:
        print(f"racewire {command}: no {what} (or use --dry-run)", file=sys.stderr)
    if bootstrap and registry_url:
        return bootstrap, registry_url, settings
    return None


def embedded(host: str, port: int) -> str | None:
    """``host:port`` when something listens there (an embedded service of ``racewire up``), else None."""
    address = f"{host}:{port}"
    return address if bootstrap_open(address, 0.3) else None
