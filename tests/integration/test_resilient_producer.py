"""The resilient producer against a real broker the test starts, stops and restarts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from dataflows.connectors import producer as producer_module
from dataflows.connectors.producer import ProducerOptions, ResilientProducer
from dataflows.connectors.topics import create_topics
from tests.integration.test_broker_restart import Broker, Reader

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPIC = "f1.race.control"


def _options(tmp_path: Path, partitions: int | None = 3, **kw: object) -> ProducerOptions:
    return ProducerOptions(spool_dir=tmp_path / "spool", partitions=partitions, topics=(TOPIC,), **kw)  # type: ignore[arg-type]


def _values(reader: Reader) -> list[bytes]:
    return [v for _t, _k, v in reader.seen]


def test_a_producer_started_while_the_broker_is_down_spools_then_creates_the_topics(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "kafka")  # not started
    producer = ResilientProducer({"bootstrap.servers": broker.bootstrap}, _options(tmp_path), name="t",
                                 connect_timeout_s=1)
    try:
        for i in range(100):
            producer.produce(TOPIC, f"v{i}".encode(), f"k{i % 4}".encode())
        state = producer.state()
        assert state["connected"] is False and state["spooled_records"] == 100 and state["last_error"]
        broker.start()
        assert producer.flush(60) == 0
        assert producer.state()["connected"] is True
        md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
        assert len(md.topics[TOPIC].partitions) == 3  # created by the producer, with the configured count
        reader = Reader(broker.bootstrap, (TOPIC,))
        reader.read_until(lambda: len(reader.seen) >= 100, 30)
        reader.close()
        assert sorted(_values(reader), key=lambda v: int(v[1:])) == [f"v{i}".encode() for i in range(100)]
    finally:
        producer.close()
        broker.stop()


def test_a_spool_left_by_an_earlier_run_is_delivered_first(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "kafka")
    first = ResilientProducer({"bootstrap.servers": broker.bootstrap}, _options(tmp_path), name="src",
                              connect_timeout_s=1)
    for i in range(50):
        first.produce(TOPIC, f"old{i}".encode(), b"k")
    first.close(timeout=1)  # the broker never came: the records stay on disk
    broker.start()
    try:
        second = ResilientProducer({"bootstrap.servers": broker.bootstrap}, _options(tmp_path), name="src")
        assert second.state()["spooled_records"] == 50
        for i in range(50):
            second.produce(TOPIC, f"new{i}".encode(), b"k")
        assert second.flush(60) == 0
        second.close()
        reader = Reader(broker.bootstrap, (TOPIC,))
        reader.read_until(lambda: len(reader.seen) >= 100, 30)
        reader.close()
        expected = [f"old{i}".encode() for i in range(50)] + [f"new{i}".encode() for i in range(50)]
        assert _values(reader) == expected  # one key: one partition, in order
    finally:
        broker.stop()


def test_close_delivers_the_spool_once_the_broker_is_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A producer closed while it waits to try the broker again (a flow that ends just after the
    broker came back) tries at once and delivers what it spooled, instead of leaving it on disk."""
    monkeypatch.setattr(producer_module, "RETRY_INITIAL_S", 8.0)  # the next try is 8 to 16 s away
    broker = Broker(tmp_path / "kafka")
    producer = ResilientProducer({"bootstrap.servers": broker.bootstrap}, _options(tmp_path), name="ending",
                                 connect_timeout_s=1)
    try:
        for i in range(200):
            producer.produce(TOPIC, f"v{i}".encode(), b"k")
        time.sleep(producer_module.CONNECT_TIMEOUT_S + 1)  # the first try gave up
        broker.start()
        assert producer.state()["spooled_records"] == 200  # not tried since the broker is back
        began = time.monotonic()
        producer.close(timeout=20)
        assert time.monotonic() - began < 7
        assert producer.state()["spooled_records"] == 0
        reader = Reader(broker.bootstrap, (TOPIC,))
        reader.read_until(lambda: len(reader.seen) >= 200, 30)
        reader.close()
        assert _values(reader) == [f"v{i}".encode() for i in range(200)]
    finally:
        broker.stop()


def test_close_with_the_broker_away_gives_up_after_one_more_try(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "kafka")  # never started
    producer = ResilientProducer({"bootstrap.servers": broker.bootstrap}, _options(tmp_path), name="away",
                                 connect_timeout_s=1)
    for i in range(10):
        producer.produce(TOPIC, f"v{i}".encode(), b"k")
    began = time.monotonic()
    producer.close(timeout=60)
    waited = time.monotonic() - began
    assert waited < 30, f"close waited {waited:.1f} s for a broker that is not there"
    again = ResilientProducer({"bootstrap.servers": broker.bootstrap}, _options(tmp_path), name="away",
                              connect_timeout_s=1)
    assert again.state()["spooled_records"] == 10  # kept on disk for the next run
    again.close(timeout=1)


def test_a_record_the_broker_refuses_is_counted_and_the_others_go_through(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "kafka")
    broker.start()
    create_topics(broker.bootstrap, 3, (TOPIC,))
    delivered = []
    producer = ResilientProducer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 10_000,
                                  "delivery.report.only.error": False},
                                 _options(tmp_path), name="big")
    try:
        producer.produce(TOPIC, b"x" * 20_000, b"k", on_delivery=delivered.append)
        producer.produce(TOPIC, b"small", b"k", on_delivery=delivered.append)
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 10
        while len(delivered) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        state = producer.state()
        assert state["rejected"] == 1 and "refused" in state["last_error"]
        assert [d.error is None for d in delivered].count(True) == 1
    finally:
        producer.close()
        broker.stop()


def test_a_topic_with_another_partition_count_is_named(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "kafka")
    broker.start()
    create_topics(broker.bootstrap, 2, (TOPIC,))
    producer = ResilientProducer({"bootstrap.servers": broker.bootstrap}, _options(tmp_path, partitions=4),
                                 name="mm")
    try:
        (message,) = producer.state()["topic_mismatches"]
        assert f"topic {TOPIC} has 2 partitions, expected 4" in message
        assert "RACEWIRE_INPUT_PARTITIONS=2" in message
    finally:
        producer.close()
        broker.stop()


def test_racewire_topics_names_a_partition_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse
    import json

    from infra import topics

    broker = Broker(tmp_path / "kafka")
    broker.start()
    try:
        create_topics(broker.bootstrap, 2, (TOPIC,))
        parser = argparse.ArgumentParser()
        topics.add_arguments(parser)
        args = parser.parse_args(["--bootstrap", broker.bootstrap, "--partitions", "3"])
        assert topics.run(args) == 1
        out = json.loads(capsys.readouterr().out)
        assert [m["topic"] for m in out["mismatched"]] == [TOPIC]
        (mismatch,) = out["mismatched"]
        assert (mismatch["found"], mismatch["expected"]) == (2, 3)
        assert "racewire topics" in mismatch["message"] and "RACEWIRE_INPUT_PARTITIONS=2" in mismatch["message"]
        assert TOPIC not in out["created"] and "f1.timing.lap" in out["created"]
        md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
        assert len(md.topics["f1.timing.lap"].partitions) == 3
    finally:
        broker.stop()
