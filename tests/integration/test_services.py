"""Embedded services (broker, Redis, PostgreSQL), topic creation and the shared fixtures."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.services import (
    EmbeddedKafka,
    EmbeddedPostgres,
    EmbeddedRedis,
    PortInUseError,
    ServiceStartError,
    ensure_tansu_binary,
    free_port,
    kafka_reachable,
    port_in_use,
    postgres_reachable,
    redis_reachable,
)
from infra.topics import ALL_TOPICS, create_topics

pytestmark = pytest.mark.integration


def _gone(pids: list[int]) -> bool:
    return not any(psutil.pid_exists(p) for p in pids)


@pytest.fixture
def occupied_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


# ------------------------------------------------------------------------------------------
# Kafka


def test_tansu_binary_is_executable() -> None:
    path = ensure_tansu_binary()
    assert path.is_file()
    assert os.access(path, os.X_OK)


def test_topics_exist_with_four_partitions(kafka_bootstrap: str) -> None:
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    for topic in ALL_TOPICS:
        assert topic in metadata.topics, topic
        assert len(metadata.topics[topic].partitions) == 4, topic


def test_create_topics_requested_partitions_and_idempotent(kafka_bootstrap: str) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    assert create_topics(kafka_bootstrap, 3, [name]) == [name]
    assert create_topics(kafka_bootstrap, 3, [name]) == []  # already there: fine
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(name, timeout=10)
    assert len(metadata.topics[name].partitions) == 3


def test_keyed_produce_and_consume(kafka_bootstrap: str, unique_race_id: str) -> None:
    topic = "f1.timing.lap"
    key = f"{unique_race_id}:44".encode()
    delivered: list[tuple[int, int]] = []

    def on_delivery(err: object, msg: object) -> None:
        assert err is None, err
        delivered.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for value in (b"lap-1", b"lap-2"):
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(10) == 0
    assert len(delivered) == 2
    (partition, first_offset), (partition_2, _) = delivered
    assert partition == partition_2, "one key, one partition"

    # assign (no consumer group): the broker makes a joining group member wait
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": unique_race_id,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, partition, first_offset)])
    received: list[tuple[bytes | None, bytes | None]] = []
    deadline = time.monotonic() + 15
    try:
        while len(received) < 2 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            received.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    assert received == [(key, b"lap-1"), (key, b"lap-2")]


def test_embedded_kafka_start_stop(tmp_path: Path) -> None:
    with EmbeddedKafka(free_port(), tmp_path) as kafka:
        pid = kafka.pid
        assert pid is not None
        assert kafka_reachable(kafka.bootstrap)
        assert (tmp_path / "tansu.log").exists()
    assert _gone([pid])
    assert not kafka_reachable(kafka.bootstrap, timeout=0.5)


def test_start_failure_reports_log_tail(tmp_path: Path) -> None:
    with pytest.raises(ServiceStartError, match="exited with code") as info:
        EmbeddedKafka(free_port(), tmp_path, storage_engine="bogus://nowhere").start()
    assert "bogus" in str(info.value)  # the server's own complaint, from its log


# ------------------------------------------------------------------------------------------
# Redis


def test_embedded_redis_ping_and_stop_leaves_no_process(tmp_path: Path) -> None:
    server = EmbeddedRedis(free_port(), tmp_path)
    server.start()
    try:
        pid = server.pid
        assert pid is not None
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.close()
    finally:
        server.stop()
    assert _gone([pid])
    assert not redis_reachable(server.url)
    assert not port_in_use(server.port)
    server.stop()  # twice is harmless


# ------------------------------------------------------------------------------------------
# PostgreSQL


def test_embedded_postgres_select_restart_and_stop(tmp_path: Path) -> None:
    server = EmbeddedPostgres(free_port(), tmp_path, fsync=False)
    with server:
        assert server.url.endswith("/racewire")
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            conn.execute("CREATE TABLE kept (x int)")
        pids = [server.pid, *(c.pid for c in psutil.Process(server.pid).children(recursive=True))]
    assert len(pids) > 1  # postmaster and its helpers
    assert _gone(pids)  # type: ignore[arg-type]
    assert not postgres_reachable(server.url, timeout=0.5)

    with server:  # same data_dir: no initdb, the table is still there
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
        pid = server.pid
    assert _gone([pid])  # type: ignore[list-item]


# ------------------------------------------------------------------------------------------
# common behaviour


@pytest.mark.parametrize(
    ("server_class", "setting"),
    [
        (EmbeddedKafka, "RACEWIRE_KAFKA_PORT"),
        (EmbeddedRedis, "RACEWIRE_REDIS_PORT"),
        (EmbeddedPostgres, "RACEWIRE_POSTGRES_PORT"),
    ],
)
def test_occupied_port_is_refused(
    server_class: type[EmbeddedKafka | EmbeddedRedis | EmbeddedPostgres],
    setting: str,
    occupied_port: int,
    tmp_path: Path,
) -> None:
    assert port_in_use(occupied_port)
    with pytest.raises(PortInUseError) as info:
        server_class(occupied_port, tmp_path).start()
    assert f"port {occupied_port} is in use" in str(info.value)
    assert setting in str(info.value)
    assert not (tmp_path / server_class.log_name).exists()  # nothing was started


def test_probes_fail_fast_on_closed_port() -> None:
    port = free_port()
    began = time.monotonic()
    assert not redis_reachable(f"redis://127.0.0.1:{port}/0")
    assert not postgres_reachable(f"postgresql://postgres@127.0.0.1:{port}/x")
    assert not kafka_reachable(f"127.0.0.1:{port}")
    assert time.monotonic() - began < 3


# ------------------------------------------------------------------------------------------
# the shared fixtures


def test_redis_fixture_works(redis_client: redis.Redis, unique_race_id: str) -> None:
    assert unique_race_id.startswith("t-") and len(unique_race_id) == 10
    key = f"race:{unique_race_id}:probe"
    redis_client.set(key, b"\x00bytes")
    assert redis_client.get(key) == b"\x00bytes"  # decode_responses=False


def test_postgres_fixture_works(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
