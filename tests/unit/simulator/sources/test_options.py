"""Where a source's records go: the flags, the settings, else the embedded services that
`racewire up --no-race` runs on this machine."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator

import pytest

from simulator.sources.options import add_kafka_arguments, kafka_target


@pytest.fixture
def listening() -> Iterator[list[int]]:
    """Two ports something listens on (a stand-in broker and registry)."""
    socks = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        socks.append(s)
    try:
        yield [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_kafka_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_embedded_services_are_found_when_nothing_is_configured(
        listening: list[int], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    kafka, registry = listening
    monkeypatch.delenv("RACEWIRE_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("RACEWIRE_SCHEMA_REGISTRY_URL", raising=False)
    monkeypatch.setenv("RACEWIRE_KAFKA_PORT", str(kafka))
    monkeypatch.setenv("RACEWIRE_REGISTRY_PORT", str(registry))
    target = kafka_target(_args(), "live")
    assert target is not None and target[:2] == (f"127.0.0.1:{kafka}", f"http://127.0.0.1:{registry}")
    # flags and settings come first
    monkeypatch.setenv("RACEWIRE_SCHEMA_REGISTRY_URL", "http://registry.example:8081")
    target = kafka_target(_args("--bootstrap", "broker.example:9092"), "live")
    assert target is not None and target[:2] == ("broker.example:9092", "http://registry.example:8081")


def test_nothing_configured_and_nothing_running_says_what_to_do(
        listening: list[int], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("RACEWIRE_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("RACEWIRE_SCHEMA_REGISTRY_URL", raising=False)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    monkeypatch.setenv("RACEWIRE_KAFKA_PORT", str(port))
    monkeypatch.setenv("RACEWIRE_REGISTRY_PORT", str(port))
    assert kafka_target(_args(), "live") is None
    err = capsys.readouterr().err
    assert "no Kafka broker" in err and f"racewire up --no-race`: its broker on port {port}" in err
    assert "no schema registry" in err
