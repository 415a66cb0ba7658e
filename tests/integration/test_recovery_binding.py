"""The flow's Kafka source against a real (embedded) broker that loses its data (issue 11,
findings 1 and 2): recovery state is bound to the copy of the topic it was read from, a broker
that restarts empty while the flow runs is read again from its start, and a partition of tens of
thousands of single-record batches is read completely."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from dataflows.connectors.kafka import CONSUMER_TUNING
from dataflows.connectors.kafka_source import RawKafkaSource, RecoveryMismatch
from dataflows.metrics import INPUT_RESETS
from infra.flow_cli import _recovery_mismatch
from infra.services import EmbeddedKafka, free_port

TOPIC = "binding.test"


class Broker:
    """An embedded, memory-only broker this test can restart (empty) on the same port."""

    def __init__(self, data_dir: Path) -> None:
        self.port, self.data_dir = free_port(), data_dir
        self.server: EmbeddedKafka | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, partitions: int = 2) -> None:
        self.server = EmbeddedKafka(port=self.port, data_dir=self.data_dir).start()
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.create_topics([NewTopic(TOPIC, partitions, 1)]).values():
            future.result()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def produce(self, values: list[bytes], partition: int = 0, **config: Any) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, **config})
        for value in values:
            producer.produce(TOPIC, value, partition=partition)
            producer.poll(0)
        assert producer.flush(30) == 0

    def source(self) -> RawKafkaSource:
        return RawKafkaSource([self.bootstrap], [TOPIC], add_config=dict(CONSUMER_TUNING),
                              recovery_hint="--recovery-dir TEST")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "kafka")
    b.start()
    try:
        yield b
    finally:
        b.stop()


def read(part: Any, n: int, timeout: float = 30.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += part.next_batch()
        time.sleep(0.01)
    return got


def test_recovery_state_from_another_copy_of_the_topic_is_refused(broker: Broker) -> None:
    broker.produce([b"old-%d" % i for i in range(5)])
    part = broker.source().build_part("input", f"0-{TOPIC}", None)
    assert [m.value() for m in read(part, 5)] == [b"old-%d" % i for i in range(5)]
    state = part.snapshot()
    assert state[1] == 5
    part.close()

    broker.stop()  # memory-only: it comes back empty
    broker.start()
    broker.produce([b"new-0", b"new-1"])
    with pytest.raises(RecoveryMismatch, match="another copy of the topic") as refused:
        broker.source().build_part("input", f"0-{TOPIC}", state)
    assert "empty recovery directory (--recovery-dir TEST" in str(refused.value)

    new_id = broker.source().build_part("input", f"1-{TOPIC}", None).snapshot()[0]
    with pytest.raises(RecoveryMismatch, match="past the end of the partition"):
        broker.source().build_part("input", f"0-{TOPIC}", (new_id, 5))
    resumed = broker.source().build_part("input", f"0-{TOPIC}", (new_id, 1))
    assert [m.value() for m in read(resumed, 1)] == [b"new-1"]


def test_a_broker_that_restarts_empty_is_read_again_from_its_start(broker: Broker) -> None:
    source = broker.source()
    part = source.build_part("input", f"0-{TOPIC}", None)
    broker.produce([b"before-%d" % i for i in range(5)])
    assert len(read(part, 5)) == 5
    resets = INPUT_RESETS.labels(TOPIC)._value.get()

    broker.stop()
    time.sleep(1.0)
    assert part.next_batch() == []
    broker.start()
    # more records than the source had read: a consumer that kept its position would skip 0..4
    after = [b"after-%d" % i for i in range(8)]
    broker.produce(after)
    got = read(part, 8)
    assert [(m.offset(), m.value()) for m in got] == list(enumerate(after))
    assert part.snapshot()[1] == 8
    assert INPUT_RESETS.labels(TOPIC)._value.get() == resets + 1
    time.sleep(0.5)
    assert part.next_batch() == []  # nothing read twice


def test_a_partition_of_50000_single_record_batches_is_read_completely(broker: Broker) -> None:
    """Finding 2: with the old consumer settings a partition holding ~10,000+ record batches was
    not read at all (0 records in 6 s); a two-hour race at real time writes ~50,000."""
    n = 50_000
    broker.produce([b"%d" % i for i in range(n)], **{"linger.ms": 0, "batch.num.messages": 1})
    part = broker.source().build_part("input", f"0-{TOPIC}", None)
    got = read(part, n, timeout=120)
    assert len(got) == n
    assert [m.offset() for m in got] == list(range(n))

    # the same partition with a fetch wait the broker cannot find the position within (on a
    # slower machine 50 ms behaved so: ~10 records/s): the reader asks for longer fetches
    short = RawKafkaSource([broker.bootstrap], [TOPIC], add_config={**CONSUMER_TUNING, "fetch.wait.max.ms": "10"})
    part = short.build_part("input", f"0-{TOPIC}", None)
    got = read(part, n, timeout=120)
    assert [m.offset() for m in got] == list(range(n))
    assert int(part._reader.config["fetch.wait.max.ms"]) > 10


def test_a_quiet_input_stops_fetching_and_a_new_record_is_read_within_a_probe(
        broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 1's other half: an idle flow kept the broker busy with fetches. After
    IDLE_AFTER_S without a record the reader pauses (no fetch requests), and resumes as soon as
    the partitions' ends move. The first records come as one batch of several: the embedded
    broker then reports the partition's end below the position read (the start of its last batch,
    plus one), which is no loss and must not wake the reader."""
    import json

    from dataflows.connectors import kafka_source

    monkeypatch.setattr(kafka_source, "IDLE_AFTER_S", 0.5)
    fetches: list[int] = []

    def stats(raw: str) -> None:
        brokers = json.loads(raw)["brokers"].values()
        fetches.append(sum(b["req"].get("Fetch", 0) for b in brokers))

    source = RawKafkaSource([broker.bootstrap], [TOPIC], recovery_hint="--recovery-dir TEST",
                            add_config={**CONSUMER_TUNING, "statistics.interval.ms": "200", "stats_cb": stats})
    part = source.build_part("input", f"0-{TOPIC}", None)
    first = [b"first-%d" % i for i in range(20)]
    broker.produce(first, **{"linger.ms": 100})
    assert [m.value() for m in read(part, len(first))] == first
    reader = part._reader
    deadline = time.monotonic() + 10
    while not reader.paused and time.monotonic() < deadline:
        assert part.next_batch() == []
    assert reader.paused
    part.next_batch()
    before = fetches[-1]
    began = time.monotonic()
    while time.monotonic() - began < 2:
        assert part.next_batch() == []
        assert reader.paused and reader.suspect is None
    assert fetches[-1] - before <= 1, f"{fetches[-1] - before} fetch requests in 2 s while paused"

    broker.produce([b"second"])
    sent = time.monotonic()
    got = read(part, 1, timeout=5)
    waited = time.monotonic() - sent
    assert [m.value() for m in got] == [b"second"]
    assert waited < 1.0, f"the first record after a quiet spell took {waited:.2f} s"
    assert not reader.paused
    assert part.snapshot()[1] == len(first) + 1
    part.close()


def test_the_flow_cli_finds_a_refusal_behind_bytewaxs_wrapping() -> None:
    inner = RecoveryMismatch("recovery state for t/0 was taken from another copy of the topic")
    try:
        try:
            raise inner
        except RecoveryMismatch as exc:
            raise RuntimeError("error building input partition") from exc
    except RuntimeError as wrapped:
        assert _recovery_mismatch(wrapped) == str(inner)
    text = RuntimeError("(src/inputs.rs:1) error calling build_part\nRecoveryMismatch: it does not fit\nTraceback")
    assert _recovery_mismatch(text) == "it does not fit"
    assert _recovery_mismatch(RuntimeError("other")) is None
