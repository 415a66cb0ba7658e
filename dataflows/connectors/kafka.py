"""Kafka edge of the dataflows: decode input messages, encode output messages (dead letters:
:meth:`dataflows.outputs.Rejected.dead_letter`).

Decoding happens a whole batch at a time (``flat_map_batch``): one Python call per batch of
messages instead of one per message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from bytewax.connectors.kafka import KafkaSinkMessage

from dataflows import metrics
from dataflows.connectors.kafka_source import RawKafkaSource, StubMessage, as_ref
from dataflows.outputs import Rejected
from dataflows.race.validate import validate
from schemas.codec import INPUT_TOPICS, Codec, CodecError
from schemas.model import DeadLetter, Lap, Leaderboard, RaceEvent, Recommendation, Stint

CodecFactory = Callable[[], Codec]

#: consumer settings. A broker holds a fetch that finds nothing for up to ``fetch.wait.max.ms``
#: (``fetch.min.bytes`` 1: it answers as soon as a record is there). Kafka answers the moment a
#: record lands; the embedded broker (tansu) looks again about every quarter of the wait, so the
#: wait is input latency there, and it gives up a fetch whose search of the partition outruns the
#: wait: measured with 60,000 single-record batches in one partition, 20 ms read nothing (not even
#: the tail), 50 ms read all of it. 50 ms (``RACEWIRE_KAFKA_FETCH_WAIT_MS``) keeps input → browser
#: p99 under 50 ms and long sessions readable; an idle flow sends no fetches at all (the source
#: pauses, see :mod:`dataflows.connectors.kafka_source`). Large fetches and a deep local queue keep
#: throughput; a short ``fetch.queue.backoff.ms`` keeps a full local queue from pausing fetching
#: for a whole second.
CONSUMER_TUNING: dict[str, str] = {
    "fetch.wait.max.ms": "50",
    "fetch.min.bytes": "1",
    "max.partition.fetch.bytes": str(16 << 20),
    "fetch.max.bytes": str(64 << 20),
    "queued.min.messages": "50000",
    "queued.max.messages.kbytes": "8192",
    "fetch.queue.backoff.ms": "10",
}


def make_source(bootstrap: str, topics: Iterable[str] = INPUT_TOPICS, batch_size: int = 5000,
                recovery_hint: str = "--recovery-dir", fetch_wait_ms: int | None = None) -> RawKafkaSource:
    config = dict(CONSUMER_TUNING)
    if fetch_wait_ms is not None:
        config["fetch.wait.max.ms"] = str(fetch_wait_ms)
    return RawKafkaSource(bootstrap.split(","), topics, add_config=config, batch_size=batch_size,
                          recovery_hint=recovery_hint)


class RaceChunk(list[tuple[Any, Any]]):
    """``(record, msg)`` pairs of one race, in the order they were read.

    Records of a race that need no per-driver step travel through the flow as one chunk per
    batch instead of one item each: the framework's per-item cost is paid once per chunk. ``msg``
    is the broker's message itself (kept for dead letters); a chunk that has to cross to another
    worker is pickled with :class:`MessageRef` copies instead.
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (RaceChunk, ([(record, as_ref(msg)) for record, msg in self],))


class Decoder:
    """``flat_map_batch`` mapper over a batch of messages. Emits, keyed for the next step:

    - ``(race_id:driver, (lap, msg))`` for each lap (for the per-driver step),
    - ``(race_id, RaceChunk)`` with the batch's other records of each race,
    - :class:`Rejected` for everything that cannot be decoded or is invalid.
    """

    def __init__(self, codec_factory: CodecFactory, step: str = "decode") -> None:
        self._factory = codec_factory
        self._codec: Codec | None = None
        self.step = step

    def __call__(self, batch: list[Any]) -> list[tuple[str, Any] | Rejected]:
        codec = self._codec
        if codec is None:
            codec = self._codec = self._factory()
        out: list[tuple[str, Any] | Rejected] = []
        append = out.append
        chunks: dict[str, RaceChunk] = {}
        decode = codec.decode_record
        for raw in batch:
            err = raw.error()
            if err is not None:
                append(Rejected(f"broker error: {err}", "BROKER", self.step, as_ref(raw)))
                continue
            value = raw.value()
            if value is None:
                append(Rejected("empty message value (tombstone) on an input topic", "DECODE", self.step,
                                as_ref(raw)))
                continue
            try:
                record = decode(value)
            except CodecError as exc:
                append(Rejected(str(exc), exc.error_type, self.step, as_ref(raw)))
                continue
            topic = raw.topic()
            if topic != record.TOPIC:
                append(Rejected(f"record of {record.TOPIC} published on {topic}", "INVALID", self.step,
                                as_ref(raw), getattr(record, "race_id", None)))
                continue
            why = validate(record)
            if why is not None:
                append(Rejected(why, "INVALID", self.step, as_ref(raw), record.race_id))
                continue
            if type(record) is Lap:
                append((f"{record.race_id}:{record.driver_number}", (record, as_ref(raw))))
                continue
            chunk = chunks.get(record.race_id)
            if chunk is None:
                chunk = chunks[record.race_id] = RaceChunk()
                append((record.race_id, chunk))
            chunk.append((record, raw))
        # records read per race (decoded, whatever became of them), counted per output item
        read: dict[str, int] = {}
        for item in out:
            if isinstance(item, Rejected):
                metrics.rejected(item.race_id, item.error_type)
                if item.race_id is not None:
                    read[item.race_id] = read.get(item.race_id, 0) + 1
            elif type(item[1]) is RaceChunk:
                read[item[0]] = read.get(item[0], 0) + len(item[1])
            else:  # a lap, keyed by race:driver
                race_id = item[1][0].race_id
                read[race_id] = read.get(race_id, 0) + 1
        for race_id, n in read.items():
            metrics.ACCOUNT.count(race_id, "read", n)
        return out


def is_lap(item: tuple[str, Any]) -> bool:
    """A keyed lap for the per-driver step (rather than a race chunk)."""
    return not isinstance(item[1], RaceChunk)


_PER_DRIVER = (Stint, Recommendation)


class Encoder:
    """Output objects → :class:`KafkaSinkMessage` for the output topics."""

    def __init__(self, codec_factory: CodecFactory) -> None:
        self._factory = codec_factory
        self._codec: Codec | None = None

    def __call__(self, item: Leaderboard | RaceEvent | DeadLetter | Any) -> KafkaSinkMessage:
        codec = self._codec
        if codec is None:
            codec = self._codec = self._factory()
        metrics.RECORDS_OUT.labels(item.TOPIC).inc()
        if isinstance(item, DeadLetter):
            return KafkaSinkMessage(key=item.key, value=codec.encode(item.TOPIC, item),
                                    topic=item.TOPIC)
        # per-driver outputs are keyed race_id:driver_number (the topic contract), the rest race_id
        number = getattr(item, "driver_number", None) if isinstance(item, _PER_DRIVER) else None
        key = item.race_id if number is None else f"{item.race_id}:{number}"
        return KafkaSinkMessage(key=key.encode(), value=codec.encode(item.TOPIC, item), topic=item.TOPIC)


def source_message(topic: str, key: str | bytes | None, value: bytes | None, partition: int = 0,
                   offset: int = 0) -> StubMessage:
    """A message as the Kafka source would emit it (for testing sources and tools)."""
    k = key.encode() if isinstance(key, str) else key
    return StubMessage(topic, k, value, partition, offset)
