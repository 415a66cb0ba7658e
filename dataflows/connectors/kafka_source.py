"""A lean Kafka source for Bytewax: one input partition per Kafka partition, offsets as recovery
state, bound to the copy of the topic they were taken from; one consumer per worker.

Why not ``bytewax.connectors.kafka.KafkaSource``: it copies every message into a Python
dataclass (``KafkaSourceMessage``), parses librdkafka statistics every second per partition, and
runs one consumer per partition; measured on the race flow that is ~15% of all CPU at 50k
messages/s, and an idle system kept busy by dozens of consumers polling the broker. Here:

- **one consumer per worker** reads every partition the worker owns (one fetch request per
  broker for all of them). The first partition built on a worker is its *reader*: it consumes
  for all; the others only report their positions. When nothing arrives the reader waits inside
  librdkafka (at most :data:`IDLE_WAIT_S`), which wakes the moment a record lands.
- **a quiet input costs next to nothing.** While records flow, the consumer fetches with a short
  wait (low latency; a broker that answers long polls by polling its storage, as the embedded
  one does, pays for every fetch). After :data:`IDLE_AFTER_S` without a record the reader
  *pauses* its partitions (no fetch requests at all) and asks the broker only for the partitions'
  ends, in one request every :data:`PROBE_EVERY_S`; as soon as an end moves past the position
  read, or moves at all from what the first probe of the quiet spell saw, it resumes fetching.
  The first record after a quiet spell is picked up within that interval, every later one at
  once (the resumed partitions are sought to the positions read, so their fetch starts at once
  instead of after librdkafka's backoff: 14 ms instead of ~675 ms to the first record after a
  quiet spell). An end *below* the position read is no proof of loss by itself (the embedded broker
  answers "latest" with the start of its last batch, plus one); a broker that really truncated
  a partition answers the resumed fetch with an out-of-range error, which the topic check handles.
- **a broker that answers fetches with (nearly) nothing while records wait** gets longer fetches.
  The embedded broker spends part of each fetch's wait on finding the position in the partition,
  and that part grows with the number of batches it holds: on a partition of 60,000 single-record
  batches a 20 ms wait read 51 records in 3 s, a 50 ms wait read them all on this machine, and on
  a slower one 50 ms read ~10 records/s (the flow never caught up). When, for
  :data:`STARVED_CHECKS` reports in a row, records were behind the positions all along, most
  reads found nothing and fewer records were read than were behind, the reader starts its
  consumer again at the positions read with twice the fetch wait (at most
  :data:`MAX_FETCH_WAIT_MS`), and logs it. A Kafka broker answers a fetch the moment records are
  there, so this never happens there, and a longer wait costs it nothing.
- **the reader's cost does not grow with the records it hands out**: positions come from the
  consumer (one call per batch for every partition), never from each record; the partitions a
  worker owns are assigned together at its first read, so the first fetch asks for all of them
  (assigned one by one, the first partitions' backlog was read far ahead of the others: a race's
  telemetry held for a session record that came 80,000 records later).
- the decoder reads the ``confluent_kafka.Message`` directly, in the same step, and keeps only a
  small picklable :class:`MessageRef` for records that may still be rejected later.
- **recovery state is bound to the data it was taken from**: each partition's state is
  ``(topic id, next offset)``. A snapshot met by another copy of the topic (the broker lost its
  data, the topic was recreated, another cluster) or whose offset lies past the partition's end is
  refused at start-up with :class:`RecoveryMismatch`, which says what to do; it is never applied
  to other data.
- **a broker that restarts empty while the flow runs** is noticed (a connection error, an
  offset out of range, or the periodic check every :data:`CHECK_EVERY_S`): nothing more is read
  until the topic ids are checked again; a partition whose topic has a new id is read again from
  its start (the flow's state still holds everything read before; the producers re-send what
  the broker lost from their spools). Counted in ``racewire_flow_input_resets_total``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from operator import methodcaller
from typing import Any, NamedTuple

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from dataflows.metrics import ACCOUNT, FETCH_WAIT, INPUT_RESETS, RECORDS_IN

log = logging.getLogger("racewire.flow.source")

#: the longest a reader waits inside librdkafka for a record when the last read found none
IDLE_WAIT_S = 0.02
#: a reader that found no record for this long pauses fetching (see the module docstring). Longer
#: than the quiet spells of a live session (the public feed makes no records between lap
#: completions: 30-40 s at the front), so that a live session never pays the probe's delay
IDLE_AFTER_S = 60.0
#: how often a paused reader asks for the partitions' ends (the most a record after a quiet spell waits)
PROBE_EVERY_S = 0.25
#: how often the topic ids are checked while the flow runs (and lag reported)
CHECK_EVERY_S = 5.0
#: how soon to look again while the broker cannot be reached to check the topics
RETRY_CHECK_S = 0.5
#: how often the reader reports positions and lag (cheap: cached watermarks)
REPORT_EVERY_S = 1.0
#: non-reader partitions are asked again after this long (they only report their position)
FOLLOWER_AWAKE_S = 1.0
ADMIN_TIMEOUT_S = 5.0
#: reports in a row that find the reader starved (see the module docstring) before it asks for longer fetches
STARVED_CHECKS = 2
#: the longest fetch wait the reader asks for when starved
MAX_FETCH_WAIT_MS = 1000

_ERROR = methodcaller("error")


#: errors after which the topics are checked before anything more is read
_SUSPECT = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._AUTO_OFFSET_RESET,
            KafkaError.OFFSET_OUT_OF_RANGE, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION,
            KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_ID}


class RecoveryMismatch(RuntimeError):
    """The recovery state does not fit the topics the flow meets; applying it would be wrong."""


class MessageRef(NamedTuple):
    """Where a record came from and its original bytes (for dead letters); picklable."""

    topic: str | None
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None


def as_ref(msg: Any) -> MessageRef | None:
    """A picklable :class:`MessageRef` of a ``confluent_kafka.Message`` (or of a ref)."""
    if isinstance(msg, MessageRef) or msg is None:
        return msg
    return MessageRef(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value())


class StubMessage:
    """Quacks like ``confluent_kafka.Message``: for testing sources and tools."""

    __slots__ = ("_key", "_offset", "_partition", "_topic", "_value")

    def __init__(self, topic: str, key: bytes | None, value: bytes | None, partition: int = 0,
                 offset: int = 0) -> None:
        self._topic, self._key, self._value = topic, key, value
        self._partition, self._offset = partition, offset

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> None:
        return None


#: a partition's recovery state: (topic id, next offset to read)
PartitionState = tuple[str | None, int]


def topic_ids(admin: AdminClient, topics: Iterable[str], timeout: float = ADMIN_TIMEOUT_S) -> dict[str, str | None]:
    """Each topic's id (changes when a topic is created again); None for a topic that does not
    exist. Raises :class:`KafkaException` when the broker cannot be asked."""
    futures = admin.describe_topics(TopicCollection(list(topics)), request_timeout=timeout)
    ids: dict[str, str | None] = {}
    for topic, future in futures.items():
        try:
            ids[topic] = str(future.result().topic_id)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART,
                                                                  KafkaError._UNKNOWN_TOPIC):
                ids[topic] = None
            else:
                raise
    return ids


def _what_to_do(recovery: str) -> str:
    return (f"The flow refuses to apply this recovery state to other data. Start it with an empty "
            f"recovery directory ({recovery}: delete its files; every race is then rebuilt from "
            "the input topics), or point it at the cluster and topics the state was taken from.")


class _Reader:
    """The one consumer of a worker, shared by the worker's partitions."""

    def __init__(self, config: dict[str, Any], batch_size: int) -> None:
        self.config = config
        self.consumer = Consumer(config)
        self.admin = AdminClient({"bootstrap.servers": config["bootstrap.servers"]})
        self.batch_size = batch_size
        self.positions: dict[tuple[str, int], int] = {}
        self.ids: dict[str, str | None] = {}
        self.leader: _Partition | None = None
        self.idle = False
        self.paused = False  # quiet input: no fetching, only the partitions' ends are asked for
        self.last_record = time.monotonic()
        self.ends: dict[tuple[str, int], int] = {}  # partition ends seen by the last probe
        self.quiet_ends: dict[tuple[str, int], int] | None = None  # seen by the quiet spell's first probe
        self.check_due = time.monotonic() + CHECK_EVERY_S
        self.suspect: str | None = None  # why the topics must be checked before reading on
        self.report_due = 0.0
        self.error_logged: dict[int, float] = {}
        #: partitions added since the last read: assigned together, so that the first fetch asks
        #: for all of them (a partition assigned alone first would be read far ahead of the others)
        self.to_assign: list[TopicPartition] = []
        # starvation (see the module docstring): reads and empty reads since the last report, the
        # records read and behind at the last report, and how many reports in a row found it starved
        self.reads = self.empty_reads = 0
        self.read_total = 0
        self.read_at_report = 0
        self.behind_at_report = 0
        self.starved = 0

    def add(self, topic: str, partition: int, resume: Any, starting_offset: int, recovery: str) -> str | None:
        """Assign a partition, checking its recovery state first; returns the topic id."""
        if topic not in self.ids:
            self.ids.update(topic_ids(self.admin, [topic]))
        tid = self.ids[topic]
        if tid is None:
            raise RuntimeError(f"input topic {topic!r} does not exist; create the topics first (`racewire topics`)")
        low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                        timeout=ADMIN_TIMEOUT_S, cached=False)
        if resume is None:
            offset = {OFFSET_BEGINNING: low, OFFSET_END: high}.get(starting_offset, starting_offset)
        else:
            if isinstance(resume, int):  # state of a version that did not record the topic id
                bound, offset = None, resume
            else:
                bound, offset = resume
            if bound is not None and bound != tid:
                raise RecoveryMismatch(
                    f"recovery state for {topic}/{partition} was taken from another copy of the topic "
                    f"(topic id {bound}; the broker's {topic} has id {tid}): the broker lost its data, the "
                    f"topic was created again, or this is another cluster. {_what_to_do(recovery)}")
            if offset > high:
                raise RecoveryMismatch(
                    f"recovery state for {topic}/{partition} resumes at offset {offset}, past the end of "
                    f"the partition ({high} records): the state was taken from other data. "
                    f"{_what_to_do(recovery)}")
            if offset < low:
                log.warning("records deleted by retention before the flow read them: %s",
                            {"partition": f"{topic}/{partition}", "resume_at": offset, "first_kept": low})
                offset = low
        self.positions[(topic, partition)] = offset
        self.to_assign.append(TopicPartition(topic, partition, offset))
        return tid

    def position(self, topic: str, partition: int) -> PartitionState:
        return self.ids.get(topic), self.positions[(topic, partition)]

    # ------------------------------------------------------------------ reading
    def read(self) -> list[Any]:
        if self.to_assign:
            self.consumer.incremental_assign(self.to_assign)
            self.to_assign = []
        now = time.monotonic()
        if (self.suspect is not None or now >= self.check_due) and not self._check(now):
            self.idle = True
            return []
        if self.paused and not self._probe():
            # nothing new: wait inside librdkafka (errors still surface) until the next probe
            self._consume_errors(PROBE_EVERY_S)
            if now >= self.report_due:
                self._report(now)
            return []
        if self.idle:
            # consume() would wait out its whole timeout unless a full batch came: poll() returns
            # with the first record, the rest of what is there follows at once
            first = self.consumer.poll(IDLE_WAIT_S)
            msgs = [] if first is None else [first, *self.consumer.consume(self.batch_size - 1, 0)]
        else:
            msgs = self.consumer.consume(self.batch_size, 0)
        if any(map(_ERROR, msgs)):  # rare: errors between the records
            out = self._records(msgs)
        else:
            out = msgs
            if msgs:
                self._advance()
        self.idle = not out
        self.reads += 1
        if out:
            self.last_record = now
            self.read_total += len(out)
        else:
            self.empty_reads += 1
            if now - self.last_record >= IDLE_AFTER_S and self.suspect is None:
                self._pause()
        if now >= self.report_due:
            self._report(now)
        return out

    def _advance(self) -> None:
        """Take the positions from the consumer (one call for every partition, not one per record:
        the offset after the last record handed out) and count what each topic read."""
        positions = self.positions
        read: dict[str, int] = {}
        for tp in self.consumer.position(self._partitions()):
            offset = tp.offset
            if offset < 0:
                continue  # nothing handed out yet
            key = (tp.topic, tp.partition)
            before = positions[key]
            if offset != before:
                positions[key] = offset
                read[tp.topic] = read.get(tp.topic, 0) + offset - before
        for topic, n in read.items():
            RECORDS_IN.labels(topic).inc(max(n, 0))

    def _records(self, msgs: list[Any]) -> list[Any]:
        """The records among ``msgs`` with consumer errors handled, positions taken record by record
        (an error may stop the batch: what follows it is read again once the topics are checked)."""
        out: list[Any] = []
        positions = self.positions
        read: dict[str, int] = {}
        for msg in msgs:
            err = msg.error()
            if err is not None:
                self._on_error(err, msg)
                if self.suspect is not None:
                    break
                continue
            topic = msg.topic()
            out.append(msg)
            read[topic] = read.get(topic, 0) + 1
            positions[(topic, msg.partition())] = msg.offset() + 1
        for topic, n in read.items():
            RECORDS_IN.labels(topic).inc(n)
        return out

    def _partitions(self) -> list[TopicPartition]:
        return [TopicPartition(topic, partition) for topic, partition in self.positions]

    def _pause(self) -> None:
        self.consumer.pause(self._partitions())
        self.paused = True
        self.quiet_ends = None
        log.debug("input quiet for %.0f s: fetching paused, asking for the partitions' ends every %.2f s",
                  IDLE_AFTER_S, PROBE_EVERY_S)

    def _resume(self) -> None:
        self.consumer.resume(self._partitions())
        # a resumed partition's fetcher waits out its backoff first (~0.65 s seen here); a seek to
        # the position read starts its fetch at once (nothing was fetched past it while paused)
        for (topic, partition), offset in self.positions.items():
            self._seek(TopicPartition(topic, partition, offset))
        self.paused = False
        self.last_record = time.monotonic()

    def _probe(self) -> bool:
        """Ask for every partition's end; resume fetching (True) once one moved past what was read."""
        try:
            futures = self.admin.list_offsets({tp: OffsetSpec.latest() for tp in self._partitions()},
                                              request_timeout=2.0)
            ends = {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
        except KafkaException as exc:
            self.suspect = self.suspect or f"asking for the partitions' ends failed: {exc}"
            self._resume()  # the check reads on from the positions once the broker answers
            return True
        self.ends = ends
        if self.quiet_ends is None:
            self.quiet_ends = ends
            behind = {f"{t}/{p}": (ends[(t, p)], offset) for (t, p), offset in self.positions.items()
                      if ends[(t, p)] < offset}
            if behind:
                log.debug("the broker reports partition ends below the positions read (end, position): %s; "
                          "fetching resumes when an end changes", behind)
        if ends != self.quiet_ends or any(ends[key] > offset for key, offset in self.positions.items()):
            self._resume()
            return True
        return False

    def _consume_errors(self, timeout: float) -> None:
        for msg in self.consumer.consume(self.batch_size, timeout):  # paused: errors only
            err = msg.error()
            if err is not None:
                self._on_error(err, msg)

    def _on_error(self, err: KafkaError, msg: Any) -> None:
        code = err.code()
        if code == KafkaError._PARTITION_EOF:
            return
        if code in _SUSPECT:
            if self.suspect is None:
                self.suspect = f"{err.name()}: {err.str()}"
                log.warning("input interrupted; checking the topics before reading on: %s",
                            {"error": self.suspect, "partition": f"{msg.topic()}/{msg.partition()}"})
            return
        now = time.monotonic()
        if now - self.error_logged.get(code, 0.0) > 10:
            self.error_logged[code] = now
            log.warning("consumer error: %s", {"error": f"{err.name()}: {err.str()}",
                                               "partition": f"{msg.topic()}/{msg.partition()}"})

    def _check(self, now: float) -> bool:
        """Compare the topic ids with those read from; read a recreated topic from its start.
        Returns False while the broker cannot be asked (nothing is read meanwhile)."""
        try:
            current = topic_ids(self.admin, list(self.ids), timeout=2.0)
        except KafkaException as exc:
            self.check_due = now + RETRY_CHECK_S
            self.suspect = self.suspect or str(exc)
            return False
        if any(tid is None for tid in current.values()):  # not created again yet: wait for it
            self.check_due = now + RETRY_CHECK_S
            self.suspect = self.suspect or "an input topic is missing"
            return False
        seek: list[TopicPartition] = []
        for (topic, partition), offset in self.positions.items():
            if current[topic] != self.ids[topic]:
                INPUT_RESETS.labels(topic).inc()
                log.warning("the broker lost an input topic (restarted empty or created again); reading "
                            "it again from its start: %s", {"partition": f"{topic}/{partition}",
                                                           "was_at": offset, "topic_id": current[topic]})
                self.positions[(topic, partition)] = 0
                seek.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
            elif self.suspect is not None:
                seek.append(TopicPartition(topic, partition, offset))  # drop what was fetched meanwhile
        self.ids.update(current)
        for tp in seek:
            self._seek(tp)
        if self.suspect is not None:
            log.info("input resumed: %s", {"after": self.suspect, "partitions_read_again": sum(
                1 for tp in seek if tp.offset == OFFSET_BEGINNING)})
        self.suspect = None
        self.check_due = now + CHECK_EVERY_S
        return True

    def _seek(self, tp: TopicPartition) -> None:
        try:
            self.consumer.seek(tp)
        except KafkaException:  # not fetching yet (erroneous state): assign again at that offset
            self.consumer.incremental_unassign([TopicPartition(tp.topic, tp.partition)])
            self.consumer.incremental_assign([tp])

    def _report(self, now: float) -> None:
        self.report_due = now + REPORT_EVERY_S
        behind = 0
        for (topic, partition), offset in self.positions.items():
            if self.paused:  # not fetching: the cached watermarks are stale, the probe's ends are not
                # (an end reported below the position read is the broker's rounding: nothing is behind)
                end = self.ends.get((topic, partition))
                high = None if end is None else max(end, offset)
            else:
                try:
                    _low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
                except KafkaException:
                    high = None
                if high is not None and high > offset:
                    behind += high - offset
            ACCOUNT.partition(f"{topic}/{partition}", offset, high)
        self._watch_starvation(behind)

    def _watch_starvation(self, behind: int) -> None:
        """Called at each report: longer fetches once the reader is starved (module docstring)."""
        read = self.read_total - self.read_at_report
        starved = (not self.paused and self.suspect is None and behind > 0 and self.behind_at_report > 0
                   and self.reads > 0 and 2 * self.empty_reads >= self.reads
                   and read < min(self.behind_at_report, self.batch_size))
        self.starved = self.starved + 1 if starved else 0
        self.read_at_report, self.behind_at_report = self.read_total, behind
        self.reads = self.empty_reads = 0
        if self.starved >= STARVED_CHECKS:
            self.starved = 0
            self._longer_fetches(behind, read)

    def _longer_fetches(self, behind: int, read: int) -> None:
        """Start the consumer again at the positions read, with twice the fetch wait."""
        wait = int(self.config.get("fetch.wait.max.ms", 500))
        if wait >= MAX_FETCH_WAIT_MS:
            return
        longer = min(2 * wait, MAX_FETCH_WAIT_MS)
        log.warning("the broker answers fetches with few records although %d wait: fetch wait %d ms -> %d ms",
                    behind, wait, longer, extra={"read_last_report": read, "partitions": len(self.positions)})
        self.consumer.close()
        self.config = {**self.config, "fetch.wait.max.ms": str(longer)}
        self.consumer = Consumer(self.config)
        self.consumer.incremental_assign(
            [TopicPartition(topic, partition, offset) for (topic, partition), offset in self.positions.items()])
        FETCH_WAIT.set(longer / 1000)

    def close(self) -> None:
        self.consumer.close()


class _Partition(StatefulSourcePartition[Any, PartitionState]):
    def __init__(self, reader: _Reader, topic: str, partition: int) -> None:
        self._reader = reader
        self._topic, self._partition = topic, partition
        if reader.leader is None:
            reader.leader = self

    def next_batch(self) -> list[Any]:
        if self._reader.leader is self:
            return self._reader.read()
        return []

    def next_awake(self) -> datetime | None:
        reader = self._reader
        if reader.leader is self:
            if reader.suspect is not None:
                return datetime.now(UTC) + timedelta(seconds=RETRY_CHECK_S)
            return None  # the reader waits inside librdkafka when idle
        return datetime.now(UTC) + timedelta(seconds=FOLLOWER_AWAKE_S)

    def snapshot(self) -> PartitionState:
        return self._reader.position(self._topic, self._partition)

    def close(self) -> None:
        if self._reader.leader is self:
            self._reader.close()


class RawKafkaSource(FixedPartitionedSource[Any, PartitionState]):
    """Emits ``confluent_kafka.Message`` objects (records only: consumer errors are handled here)."""

    def __init__(self, brokers: Iterable[str], topics: Iterable[str], add_config: dict[str, str] | None = None,
                 batch_size: int = 5000, starting_offset: int = OFFSET_BEGINNING,
                 recovery_hint: str = "--recovery-dir") -> None:
        self._brokers = ",".join(brokers)
        self._topics = list(topics)
        self._add_config = dict(add_config or {})
        self._batch_size = batch_size
        self._starting_offset = starting_offset
        self._recovery_hint = recovery_hint
        self._readers: dict[int, _Reader] = {}  # per worker thread
        self._lock = threading.Lock()

    def list_parts(self) -> list[str]:
        client = AdminClient({"bootstrap.servers": self._brokers})
        parts: list[str] = []
        for topic in self._topics:
            md = client.list_topics(topic, timeout=30).topics[topic]
            if md.error is not None:
                raise RuntimeError(f"cannot list partitions of topic {topic!r}: {md.error.str()}; "
                                   "create the topics first (`racewire topics`)")
            parts.extend(f"{p}-{topic}" for p in sorted(md.partitions))
        return parts

    def _reader(self) -> _Reader:
        key = threading.get_ident()
        with self._lock:
            reader = self._readers.get(key)
            if reader is None:
                config = {
                    "bootstrap.servers": self._brokers,
                    "group.id": "racewire-unused",  # partitions are assigned, offsets kept by recovery
                    "enable.auto.commit": "false",
                    "enable.auto.offset.store": "false",
                    "enable.partition.eof": "false",
                    "auto.offset.reset": "error",  # an offset out of range is looked into, never skipped
                    **self._add_config,
                }
                reader = self._readers[key] = _Reader(config, self._batch_size)
        return reader

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _Partition:
        idx, topic = for_part.split("-", 1)
        reader = self._reader()
        reader.add(topic, int(idx), resume_state, self._starting_offset, self._recovery_hint)
        return _Partition(reader, topic, int(idx))
