"""Producers across a restart of the broker (issue 11, findings 7 and 4).

Every test starts an embedded broker of its own and stops and restarts it on the same port; the
broker keeps its data in memory, so it comes back empty. A consumer of the test reads what was
delivered before the stop, and everything again from the recreated topics after it; together
they must hold every record, in order per key (records the broker had not acknowledged may come
twice: consumers de-duplicate by ``event_id``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from infra.bench.harness import serve_in_thread
from infra.services import EmbeddedKafka, free_port
from schemas.codec import INPUT_TOPICS, Codec, make_registry_client
from schemas.settings import Settings
from serving.app import ServingOptions, create_app
from simulator.race import RaceSimulator
from simulator.sources.produce import record_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]

API_KEY = "test-key-123"
PARTITIONS = 2
REPO = Path(__file__).resolve().parents[2]


class Broker:
    """An embedded broker the test can stop and start again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.server: EmbeddedKafka | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = EmbeddedKafka(self.port, self.workdir).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "kafka")
    b.start()
    from infra.topics import create_topics

    create_topics(b.bootstrap, PARTITIONS)
    try:
        yield b
    finally:
        b.stop()


class Reader:
    """Reads topics from offset 0 into ``seen`` (key, value) lists; ``reopen()`` after a restart."""

    def __init__(self, bootstrap: str, topics: tuple[str, ...]) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.seen: list[tuple[str, bytes, bytes]] = []
        self._consumer: Consumer | None = None

    def _open(self, timeout: float = 30.0) -> Consumer:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "test-reader",
                             "enable.auto.commit": False, "auto.offset.reset": "earliest",
                             "allow.auto.create.topics": False, "log_level": 0})
        deadline = time.monotonic() + timeout
        while True:
            try:
                md = consumer.list_topics(timeout=5)
                if all(t in md.topics and md.topics[t].partitions for t in self.topics):
                    break
            except KafkaException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"topics {self.topics} not on the broker after {timeout} s")
            time.sleep(0.2)
        consumer.assign([TopicPartition(t, p, 0) for t in self.topics for p in md.topics[t].partitions])
        return consumer

    def read_until(self, done: Callable[[], bool], timeout: float) -> None:
        if self._consumer is None:
            self._consumer = self._open()
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            for msg in self._consumer.consume(10_000, 0.2):
                if msg.error() is None:
                    self.seen.append((msg.topic(), msg.key(), msg.value()))

    def caught_up(self) -> bool:
        """Nothing more to read right now (every partition at its high watermark)."""
        assert self._consumer is not None
        for tp in self._consumer.assignment():
            _low, high = self._consumer.get_watermark_offsets(tp, timeout=5)
            (pos,) = self._consumer.position([tp])
            if pos.offset < high:
                return False
        return True

    def reopen(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        self._consumer = None

    def close(self) -> None:
        self.reopen()


def _check_complete(expected: list[tuple[Any, str]], got: list[tuple[Any, str]]) -> Counter[str]:
    """Every expected event id arrived, and per key (topic and key) in the expected order; returns
    the duplicates."""
    counts = Counter(eid for _key, eid in got)
    lost = [eid for _key, eid in expected if eid not in counts]
    assert not lost, f"{len(lost)} of {len(expected)} records lost (first: {lost[:3]})"
    firsts: dict[Any, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for key, eid in got:
        if eid not in seen:
            seen.add(eid)
            firsts[key].append(eid)
    wanted: dict[Any, list[str]] = defaultdict(list)
    for key, eid in expected:
        wanted[key].append(eid)
    for key, ids in wanted.items():
        assert firsts[key] == ids, f"key {key!r}: records out of order"
    return Counter({eid: n - 1 for eid, n in counts.items() if n > 1})


def test_simulator_keeps_going_across_a_broker_restart(broker: Broker, registry_url: str, tmp_path: Path) -> None:
    race_id, seed, laps = f"br-{os.getpid()}", 4, 3
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RACEWIRE_")},
           "RACEWIRE_DATA_DIR": str(tmp_path / "data"), "RACEWIRE_INPUT_PARTITIONS": str(PARTITIONS)}
    sim = subprocess.Popen([sys.executable, "-m", "infra.cli", "simulate", "--race-id", race_id, "--seed", str(seed),
                            "--laps", str(laps), "--speed", "20", "--bootstrap", broker.bootstrap,
                            "--registry-url", registry_url], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reader = Reader(broker.bootstrap, INPUT_TOPICS)
    try:
        reader.read_until(lambda: len(reader.seen) > 3000, 60)
        os.kill(sim.pid, signal.SIGSTOP)  # hold the simulator while the reader takes all the broker acknowledged
        reader.read_until(reader.caught_up, 30)
        reader.reopen()
        broker.stop()
        os.kill(sim.pid, signal.SIGCONT)
        time.sleep(4)  # the simulator keeps producing while the broker is away
        assert sim.poll() is None, f"the simulator exited while the broker was away:\n{sim.communicate()[0][-2000:]}"
        broker.start()  # empty: nobody but the producer recreates the topics
        sim_out, _ = sim.communicate(timeout=120)
        assert sim.returncode == 0, sim_out[-3000:]
        expected = [((r.TOPIC, record_key(r)), r.event_id) for r in RaceSimulator(race_id, seed, laps).records()]
        reader.read_until(lambda: len({v for _t, _k, v in reader.seen}) >= len(expected), 60)
    finally:
        reader.close()
        if sim.poll() is None:
            os.kill(sim.pid, signal.SIGCONT)
            sim.kill()
            sim.wait()
    codec = Codec(make_registry_client(registry_url))
    got = [((topic, key), codec.decode(value)[1]["event_id"]) for topic, key, value in reader.seen]
    duplicates = _check_complete(expected, got)
    assert sum(duplicates.values()) < 10_000  # only what the broker had not acknowledged comes twice


# ------------------------------------------------------------------------------------------ ingest


def _ingest_settings(redis_url: str, broker: Broker, registry_url: str, data_dir: Path, **kw: Any) -> Settings:
    return Settings(redis_url=redis_url, api_key=API_KEY, kafka_bootstrap=broker.bootstrap,  # type: ignore[arg-type]
                    schema_registry_url=registry_url, data_dir=data_dir, input_partitions=PARTITIONS, **kw)


def _control(race_id: str, n: int) -> dict[str, Any]:
    return {"topic": "f1.race.control",
            "record": {"event_id": f"{race_id}:rc:{n}", "race_id": race_id, "ts_ms": 1000 * n,
                       "kind": "TRACK_STATUS", "track_status": "GREEN", "message": f"message {n}"}}


FAST = ServingOptions(rate_limit_per_s=0)


def test_ingest_keeps_accepting_across_a_broker_restart(broker: Broker, registry_url: str, redis_url: str,
                                                        tmp_path: Path, unique_race_id: str) -> None:
    settings = _ingest_settings(redis_url, broker, registry_url, tmp_path / "data")
    app = create_app(settings, FAST)
    posted: list[str] = []
    reader = Reader(broker.bootstrap, ("f1.race.control",))
    headers = {"X-API-Key": API_KEY}
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:

        def post(first: int, count: int) -> httpx.Response:
            body = [_control(unique_race_id, n) for n in range(first, first + count)]
            r = http.post("/api/events", json=body, headers=headers)
            if r.status_code == 202:
                posted.extend(item["record"]["event_id"] for item in body)
            return r

        assert post(0, 50).status_code == 202
        reader.read_until(lambda: len(reader.seen) >= 50, 30)
        reader.reopen()
        broker.stop()
        began = time.monotonic()
        r = post(50, 50)
        assert r.status_code == 202, r.text
        assert time.monotonic() - began < 5
        state = app.state.ingest.state()
        assert state["connected"] is False and state["spooled_records"] >= 50 and state["last_error"]
        broker.start()
        for i in range(100, 400, 50):
            assert post(i, 50).status_code == 202
        reader.read_until(lambda: len({v for _t, _k, v in reader.seen}) >= 400, 60)
        state = app.state.ingest.state()
        assert state["connected"] is True and state["spooled_records"] == 0
    reader.close()
    codec = Codec(make_registry_client(registry_url))
    got = [(key, codec.decode(value)[1]["event_id"]) for _t, key, value in reader.seen]
    _check_complete([(unique_race_id.encode(), eid) for eid in posted], got)


def test_ingest_answers_503_with_retry_after_when_its_spool_is_full(
        broker: Broker, registry_url: str, redis_url: str, tmp_path: Path, unique_race_id: str) -> None:
    settings = _ingest_settings(redis_url, broker, registry_url, tmp_path / "data",
                                producer_spool_max_bytes=64 * 1024)
    app = create_app(settings, FAST)
    headers = {"X-API-Key": API_KEY}
    accepted: list[str] = []
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        assert http.post("/api/events", json=[_control(unique_race_id, 0)], headers=headers).status_code == 202
        accepted.append(f"{unique_race_id}:rc:0")
        broker.stop()
        refused = None
        for first in range(1, 5000, 100):
            body = [_control(unique_race_id, n) for n in range(first, first + 100)]
            r = http.post("/api/events", json=body, headers=headers)
            if r.status_code == 503:
                refused = r
                break
            assert r.status_code == 202, r.text
            accepted.extend(item["record"]["event_id"] for item in body)
        assert refused is not None, "the spool never filled up"
        assert int(refused.headers["Retry-After"]) >= 1
        assert "spool" in refused.json()["detail"]
        broker.start()
        reader = Reader(broker.bootstrap, ("f1.race.control",))
        try:
            reader.read_until(lambda: len({v for _t, _k, v in reader.seen}) >= len(accepted) - 1, 60)
        finally:
            reader.close()
    codec = Codec(make_registry_client(registry_url))
    got = {codec.decode(value)[1]["event_id"] for _t, _k, value in reader.seen}
    assert set(accepted[1:]) <= got  # every record answered 202 arrives (the first went to the old broker)


# ------------------------------------------------------------------------------------------ the flow's sink


def _output_sink(bootstrap: str, data_dir: Path) -> Any:
    """The flow's Kafka output sink, as `racewire flow race` builds it."""
    from dataflows.connectors.kafka_sink import KafkaOutputSink
    from dataflows.connectors.producer import ProducerOptions

    return KafkaOutputSink(bootstrap, ProducerOptions(spool_dir=data_dir / "spool", partitions=PARTITIONS))


def test_the_flows_kafka_sink_carries_on_across_a_broker_restart(broker: Broker, tmp_path: Path) -> None:
    from bytewax import operators as op
    from bytewax.connectors.kafka import KafkaSinkMessage
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSource, run_main

    topic = "f1.race.events"
    phase1, down, back = threading.Event(), threading.Event(), threading.Event()

    def items() -> Iterator[KafkaSinkMessage[bytes, bytes]]:
        for i in range(600):
            if i == 200:
                phase1.set()
                down.wait(60)
            if i == 400:
                back.wait(60)
            yield KafkaSinkMessage(key=f"race-{i % 3}".encode(), value=f"event-{i}".encode(), topic=topic)
            if i % 20 == 0:
                time.sleep(0.01)

    flow = Dataflow("sink-restart")
    from dataflows.connectors.kafka_sink import for_output

    messages = op.map("route", op.input("in", flow, TestingSource(items())), for_output)
    op.output("out", messages, _output_sink(broker.bootstrap, tmp_path))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_main(flow)
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    reader = Reader(broker.bootstrap, (topic,))
    try:
        assert phase1.wait(60)
        reader.read_until(lambda: len(reader.seen) >= 200, 30)
        assert len(reader.seen) == 200
        reader.reopen()
        broker.stop()
        down.set()
        time.sleep(3)
        broker.start()
        back.set()
        runner.join(90)
        assert not runner.is_alive(), "the flow did not finish within 90 s of the broker's return"
        assert not errors, f"the flow failed: {errors[0]!r}"
        reader.read_until(lambda: len({v for _t, _k, v in reader.seen}) >= 600, 30)
    finally:
        down.set()
        back.set()
        reader.close()
    got = [(key, value.decode()) for _t, key, value in reader.seen]
    _check_complete([(f"race-{i % 3}".encode(), f"event-{i}") for i in range(600)], got)
