"""Produce sources to the racewire input topics (Confluent-framed Avro on Kafka), paced or not.

Every source goes out this way (the synthetic race, a lap table, a live-timing capture).

Each record goes to its topic (``Session`` → ``f1.race.session``, ``Lap`` → ``f1.timing.lap``,
``Telemetry`` → ``f1.telemetry.car``, ``Control`` → ``f1.race.control``, ``Weather`` →
``f1.weather``), keyed by ``race_id`` (session, control, weather) or ``race_id:driver_number``
(lap, telemetry), so that one car's records stay in order on one partition.

``speed=None`` produces as fast as the broker takes it; ``speed=k`` paces by session time, so
that a record at session time ``ts`` leaves ``ts / k`` after the start (``k=1`` is real time).

Records go through a :class:`~dataflows.connectors.producer.ResilientProducer`: while the broker
is away they are spooled to disk (the race keeps its pace), and delivered in order when it is
back; when the spool is full the race waits. At the end it waits until every record is delivered.
"""

from __future__ import annotations

import heapq
import logging
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from operator import attrgetter
from pathlib import Path
from typing import Any

from dataflows.connectors.producer import ProducerOptions, ResilientProducer
from schemas.codec import Codec
from schemas.model import INPUT_TYPES, Control, InputRecord, Lap, Session, Telemetry, Weather
from simulator.sources.base import Source, record_ts

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
}
"""librdkafka settings for bulk production; the caller's ``producer_config`` overrides them."""

PACED_CONFIG: dict[str, Any] = {"linger.ms": 1}
"""At a paced speed records trickle in: don't hold each one back waiting for a batch."""

WAIT_REPORT_S = 10.0
"""At the end, while the broker is away, say every this many seconds how many records wait."""

_TELEMETRY_FIELDS = tuple(Telemetry.__slots__)
_telemetry_values = attrgetter(*_TELEMETRY_FIELDS)


_RANK: dict[type, int] = {Session: 0, Control: 1, Weather: 1, Lap: 2, Telemetry: 3}


def record_key(record: InputRecord) -> bytes:
    """Kafka key: ``race_id`` (session, control, weather) or ``race_id:driver_number`` (lap, telemetry)."""
    if isinstance(record, Telemetry | Lap):
        return f"{record.race_id}:{record.driver_number}".encode()
    return record.race_id.encode()


def record_dict(record: InputRecord) -> dict[str, Any]:
    """The Avro-ready dict of a record (a fast path for telemetry, the bulk of a race)."""
    if isinstance(record, Telemetry):
        return dict(zip(_TELEMETRY_FIELDS, _telemetry_values(record), strict=True))
    return record.to_dict()


class DeliveryError(RuntimeError):
    """The broker refused some records (they are not retried: too large, not authorised, ...)."""


def produce_race(
    source: Source,
    producer_config: dict[str, Any],
    codec: Codec,
    speed: float | None,
    topics_prefix: str = "",
    on_record: Callable[[InputRecord], None] | None = None,
    options: ProducerOptions | None = None,
) -> dict[str, int]:
    """Produce one race; returns the number of records per topic (prefixed names)."""
    return _produce(source.records(), producer_config, codec, speed, topics_prefix, on_record, options,
                    f"simulate-{source.race_id}")


def produce_many(
    sources: Iterable[Source],
    producer_config: dict[str, Any],
    codec: Codec,
    speed: float | None,
    topics_prefix: str = "",
    on_record: Callable[[InputRecord], None] | None = None,
    options: ProducerOptions | None = None,
) -> dict[str, int]:
    """Produce several races at once, interleaved by session time (as if run side by side)."""
    sources = list(sources)
    merged = heapq.merge(
        *(s.records() for s in sources), key=lambda r: (record_ts(r), _RANK[type(r)])
    )
    first = sources[0].race_id
    name = "simulate-" + (first if len(sources) == 1 else f"{first}+{len(sources) - 1}")
    return _produce(merged, producer_config, codec, speed, topics_prefix, on_record, options, name)


def produce_stream(
    records: Iterable[InputRecord],
    producer_config: dict[str, Any],
    codec: Codec,
    name: str,
    options: ProducerOptions | None = None,
) -> dict[str, int]:
    """Produce records as an iterable yields them (a live session: it blocks until the next one
    is final), each at once (no batching delay); returns the number of records per topic once it ends."""
    return _produce(records, {**PACED_CONFIG, **producer_config}, codec, None, "", None, options, name)


def default_options() -> ProducerOptions:
    """A spool in a new temporary folder (removed once everything is delivered); topics are not
    created (the caller made them). For tools and benchmarks without settings."""
    return ProducerOptions(spool_dir=Path(tempfile.mkdtemp(prefix="racewire-spool-")), partitions=None)


def _produce(
    records: Iterable[InputRecord],
    producer_config: dict[str, Any],
    codec: Codec,
    speed: float | None,
    topics_prefix: str,
    on_record: Callable[[InputRecord], None] | None,
    options: ProducerOptions | None,
    name: str,
) -> dict[str, int]:
    if speed is not None and speed <= 0:
        raise ValueError(f"speed must be positive (or None for as fast as possible), got {speed}")
    paced = PACED_CONFIG if speed is not None else {}
    temporary = options is None
    options = options or default_options()
    if topics_prefix:  # the producer makes sure the topics it writes exist
        options = replace(options, topics=tuple(topics_prefix + t for t in options.topics))
    producer = ResilientProducer({**THROUGHPUT_CONFIG, **paced, **producer_config}, options, name=name)
    counts: Counter[str] = Counter()
    topics = {cls: topics_prefix + topic for topic, cls in INPUT_TYPES.items()}
    produce = producer.produce
    try:
        start = time.monotonic()
        for record in records:
            if speed is not None:
                _pace(start + record_ts(record) / 1000 / speed)
            topic = topics[type(record)]
            produce(topic, codec.encode_dict(type(record).TOPIC, record_dict(record)), record_key(record))
            counts[topic] += 1
            if on_record is not None:
                on_record(record)
        while waiting := producer.flush(WAIT_REPORT_S):
            state = producer.state()
            log.warning("waiting for the broker at %s: %d records spooled (%s)", producer.bootstrap,
                        state["spooled_records"], state["last_error"], extra={"producer": name, "mode": state["mode"],
                               "spooled_records": state["spooled_records"], "waiting": waiting})
        rejected = producer.state()["rejected"]
    finally:
        producer.close()
    if temporary:
        shutil.rmtree(options.spool_dir, ignore_errors=True)
    if rejected:
        raise DeliveryError(f"the broker refused {rejected} records (see the log for why); the others were delivered")
    return dict(counts)


def _pace(due: float) -> None:
    """Wait until ``due`` (monotonic seconds); the producer delivers in the background meanwhile."""
    wait = due - time.monotonic()
    if wait > 0:
        time.sleep(wait)

