"""Produce simulated races to the racewire input topics (Confluent-framed Avro on Kafka).

Each record goes to its topic (``Session`` → ``f1.race.session``, ``Lap`` → ``f1.timing.lap``,
``Telemetry`` → ``f1.telemetry.car``, ``Control`` → ``f1.race.control``), keyed by ``race_id``
(session, control) or ``race_id:driver_number`` (lap, telemetry), so that one car's records stay
in order on one partition.

``speed=None`` produces as fast as the broker takes it; ``speed=k`` paces by session time, so
that a record at session time ``ts`` leaves ``ts / k`` after the start (``k=1`` is real time).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, Producer

from schemas.codec import Codec
from schemas.model import Control, InputRecord, Lap, Session, Telemetry

log = logging.getLogger(__name__)

THROUGHPUT_CONFIG: dict[str, Any] = {
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "enable.idempotence": True,
    "acks": "all",
    "delivery.report.only.error": True,
}
"""librdkafka settings for bulk production; the caller's ``producer_config`` overrides them."""

PACED_CONFIG: dict[str, Any] = {"linger.ms": 1}
"""At a paced speed records trickle in: don't hold each one back waiting for a batch."""

POLL_EVERY = 1_000
"""Serve delivery reports every this many records."""
BACKPRESSURE_POLL_S = 0.05
"""When the local queue is full, wait this long for deliveries before retrying."""
PACE_SLICE_S = 0.05
"""While pacing, sleep (serving delivery reports) in slices of at most this long."""

_TELEMETRY_FIELDS = tuple(Telemetry.__slots__)
_telemetry_values = attrgetter(*_TELEMETRY_FIELDS)


class RaceSource(Protocol):
    """What the producer needs of a simulator (``RaceSimulator`` is one)."""

    race_id: str

    def records(self) -> Iterator[InputRecord]: ...


def record_ts(record: InputRecord) -> int:
    """Session time (ms) of a record; the session record sits at 0."""
    if isinstance(record, Telemetry | Control):
        return record.ts_ms
    if isinstance(record, Lap):
        return record.crossing_ms
    return 0


_RANK: dict[type, int] = {Session: 0, Control: 1, Lap: 2, Telemetry: 3}


def record_key(record: InputRecord) -> bytes:
    """Kafka key: ``race_id`` (session, control) or ``race_id:driver_number`` (lap, telemetry)."""
    if isinstance(record, Telemetry | Lap):
        return f"{record.race_id}:{record.driver_number}".encode()
    return record.race_id.encode()


def record_dict(record: InputRecord) -> dict[str, Any]:
    """The Avro-ready dict of a record (a fast path for telemetry, the bulk of a race)."""
    if isinstance(record, Telemetry):
        return dict(zip(_TELEMETRY_FIELDS, _telemetry_values(record), strict=True))
    return record.to_dict()


class DeliveryError(RuntimeError):
    """The broker did not take some records."""


def produce_race(
    sim: RaceSource,
    producer_config: dict[str, Any],
    codec: Codec,
    speed: float | None,
    topics_prefix: str = "",
    on_record: Callable[[InputRecord], None] | None = None,
) -> dict[str, int]:
    """Produce one race; returns the number of records per topic (prefixed names)."""
    return _produce(sim.records(), producer_config, codec, speed, topics_prefix, on_record)


def produce_many(
    sims: Iterable[RaceSource],
    producer_config: dict[str, Any],
    codec: Codec,
    speed: float | None,
    topics_prefix: str = "",
    on_record: Callable[[InputRecord], None] | None = None,
) -> dict[str, int]:
    """Produce several races at once, interleaved by session time (as if run side by side)."""
    merged = heapq.merge(
        *(s.records() for s in sims), key=lambda r: (record_ts(r), _RANK[type(r)])
    )
    return _produce(merged, producer_config, codec, speed, topics_prefix, on_record)


def _produce(
    records: Iterable[InputRecord],
    producer_config: dict[str, Any],
    codec: Codec,
    speed: float | None,
    topics_prefix: str,
    on_record: Callable[[InputRecord], None] | None,
) -> dict[str, int]:
    if speed is not None and speed <= 0:
        raise ValueError(f"speed must be positive (or None for as fast as possible), got {speed}")
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    paced = PACED_CONFIG if speed is not None else {}
    producer = Producer({**THROUGHPUT_CONFIG, **paced, **producer_config, "on_delivery": delivered})
    counts: Counter[str] = Counter()
    topics = {
        cls: topics_prefix + cls.TOPIC for cls in (Session, Lap, Telemetry, Control)
    }
    start = time.monotonic()
    for n, record in enumerate(records, start=1):
        if speed is not None:
            _pace(producer, start + record_ts(record) / 1000 / speed)
        topic = topics[type(record)]
        value = codec.encode_dict(type(record).TOPIC, record_dict(record))
        key = record_key(record)
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:  # local queue full: let deliveries drain it
                producer.poll(BACKPRESSURE_POLL_S)
        counts[topic] += 1
        if n % POLL_EVERY == 0:
            producer.poll(0)
            if errors:
                break
        if on_record is not None:
            on_record(record)
    remaining = producer.flush()
    if errors or remaining:
        first = errors[0].str() if errors else "flush timed out"
        raise DeliveryError(
            f"{len(errors)} records failed and {remaining} were not delivered ({first}); "
            "check that the broker at bootstrap.servers is up and the topics exist"
        )
    return dict(counts)


def _pace(producer: Producer, due: float) -> None:
    """Wait until ``due`` (monotonic seconds), serving delivery reports meanwhile."""
    while True:
        wait = due - time.monotonic()
        if wait <= 0:
            return
        producer.poll(min(wait, PACE_SLICE_S))
