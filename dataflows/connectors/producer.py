"""A Kafka producer that survives the broker going away and coming back (even empty).

Every racewire producer uses :class:`ResilientProducer`: the flow's Kafka output sink, the
simulator and the other sources, serving's HTTP ingest. It wraps one idempotent librdkafka
producer and has two modes:

``direct``
    Records go straight to librdkafka. A sign that the broker is gone (every broker down, a
    fatal error of the idempotent producer, a record that failed or timed out) makes it
    *divert*: the producer is purged, the records it still held come back through their
    delivery reports and are written, in the order they were produced, to the disk spool; the
    producer is thrown away (a broker that restarted empty would refuse its producer id forever).
``spooling``
    Records are appended to a :class:`~dataflows.connectors.spool.DiskSpool` (bounded in bytes).
    A background thread probes the broker with backoff (``tenacity``); once it answers, it
    creates the topics that are missing with the configured partition count (a broker that
    restarted with its data in memory has none), then sends the spool in order, a batch at a
    time, deleting each batch only once the broker acknowledged all of it. When the spool is
    empty the producer goes back to ``direct``.

So nothing is lost and per key the order is kept; a record whose acknowledgement was lost may be
delivered twice, which consumers absorb by ``event_id`` (the dataflow de-duplicates its input,
and output consumers are told to). A process that starts with a spool its predecessor left
behind delivers it first.

While the spool is full, :meth:`ResilientProducer.produce` either waits (``block=True``: the
simulator, the sources, the flow's sink, which is back-pressure) or raises
:class:`~dataflows.connectors.spool.SpoolFull` with a ``retry_after_s`` (serving's ingest turns
that into 503 with ``Retry-After``). :meth:`ResilientProducer.state` tells how it is doing
(connected, spooled records and bytes, the last error), for ``/api/health``.

No racewire client lets the broker create topics (``allow.auto.create.topics=false``): they are
created here, by ``racewire topics`` and by ``racewire up``, always with the configured count.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_never, wait_exponential_jitter

from dataflows.connectors.spool import DiskSpool, Headers, Record, SpoolFull, as_headers, open_spool
from dataflows.connectors.topics import (
    ALL_TOPICS,
    NO_AUTO_CREATE,
    TopicError,
    create_topics,
    partition_mismatches,
)

__all__ = ["Delivery", "ProducerClosed", "ProducerOptions", "ResilientProducer", "SpoolFull"]

log = logging.getLogger("racewire.producer")

DEFAULT_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    # a record the broker has not taken within this goes to the spool (librdkafka's default is 5 min)
    "message.timeout.ms": 30_000,
    "reconnect.backoff.ms": 100,
    "reconnect.backoff.max.ms": 1_000,
    "delivery.report.only.error": True,
    # connection failures while the broker is away are reported once through error_cb (below),
    # not logged by librdkafka every second
    "log_level": 2,
}
"""librdkafka settings every resilient producer starts from; the caller's config overrides them."""

DRAIN_BATCH_RECORDS = 5_000
DRAIN_BATCH_BYTES = 8 << 20
DRAIN_ACK_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
POLL_S = 0.2
"""How long the background thread waits for delivery reports per round (idle: 5 wake-ups a second)."""
SETTLE_POLL_S = 0.001
"""How often :meth:`ResilientProducer.settle` looks whether librdkafka's queue is empty."""
RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 5.0
#: errors a retry cannot fix: the record itself is refused (it is dropped, counted and logged)
PERMANENT_ERRORS = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.TOPIC_EXCEPTION,
})  # fmt: skip


class ProducerClosed(RuntimeError):
    """``produce`` after ``close``."""


class _Away(Exception):
    """The broker cannot take records right now (the spool keeps them)."""


class Mode(enum.Enum):
    DIRECT = "direct"
    DIVERTING = "diverting"
    SPOOLING = "spooling"


@dataclass(frozen=True, slots=True)
class ProducerOptions:
    """Where and how much a producer spools, and the topics it makes sure exist (with
    ``partitions`` each; ``None``: it creates none and relies on whoever made them)."""

    spool_dir: Path
    spool_max_bytes: int = 256 * 1024 * 1024
    partitions: int | None = 8
    topics: tuple[str, ...] = ALL_TOPICS

    @classmethod
    def from_settings(cls, settings: Any) -> ProducerOptions:
        """From ``schemas.settings.Settings`` (passed in: this module reads no settings itself)."""
        spool_dir = settings.producer_spool_dir or Path(settings.data_dir) / "spool"
        return cls(Path(spool_dir), settings.producer_spool_max_bytes, settings.input_partitions)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of one record: delivered (partition, offset), spooled to disk, or refused."""

    topic: str
    partition: int | None = None
    offset: int | None = None
    spooled: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"topic": self.topic, "error": self.error}
        if self.spooled:
            return {"topic": self.topic, "spooled": True}
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


OnDelivery = Callable[[Delivery], None]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ResilientProducer:
    """See the module docstring. ``produce`` and ``flush`` may be called from any thread."""

    def __init__(
        self,
        config: Mapping[str, Any],
        options: ProducerOptions,
        *,
        name: str,
        on_retry: Callable[[], None] | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        if "bootstrap.servers" not in config:
            raise ValueError("config needs bootstrap.servers")
        self.name = name
        self.options = options
        self.bootstrap = str(config["bootstrap.servers"])
        self._config = {**DEFAULT_CONFIG, **config, **NO_AUTO_CREATE}
        self._generation = 0  # of the current librdkafka producer; reports of older ones are ignored
        self._on_retry = on_retry
        self._spool: DiskSpool = _open_spool(options, name)
        self._lock = threading.Lock()  # taken directly on the fast path (C-level enter/exit)
        self._cond = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._wake = threading.Event()  # cuts the wait between two tries to reach the broker short
        self._failed_tries = 0
        self._closed = False
        self._producer: Producer | None = None
        self._trouble: str | None = None
        # records librdkafka gave back, in delivery-report order (which keeps each partition's order)
        self._returned: list[tuple[Record, OnDelivery | None]] = []
        self._direct = False  # mode is direct and nothing is wrong: the fast path of produce()
        self._retry_in_s = 1.0
        self._full_since: float | None = None
        # state for state()
        self._last_error: str | None = None
        self._last_error_at: str | None = None
        self._producers_created = 0
        self._rejected = 0
        self._diverted = 0
        self._mismatches: list[str] = []
        if len(self._spool):
            log.warning("producer %s: %d records (%d bytes) left in %s by an earlier run; delivering them first",
                        name, len(self._spool), self._spool.bytes, self._spool.path,
                        extra={"producer": name, "spooled_records": len(self._spool)})
            self._set_mode(Mode.SPOOLING)
        else:
            try:
                self._producer = self._connect(connect_timeout_s)
                self._set_mode(Mode.DIRECT)
            except _Away as exc:
                self._note_error(str(exc))
                log.warning("producer %s: %s; spooling to %s until it answers", name, exc, self._spool.path,
                            extra={"producer": name})
                self._set_mode(Mode.SPOOLING)
        self._thread = threading.Thread(target=self._run, name=f"producer-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public

    @property
    def connected(self) -> bool:
        return self._mode is Mode.DIRECT

    def state(self) -> dict[str, Any]:
        """How the producer is doing, for health endpoints and logs (a plain JSON-able dict)."""
        return {
            "name": self.name,
            "connected": self._mode is Mode.DIRECT,
            "mode": self._mode.value,
            "spooled_records": len(self._spool),
            "spooled_bytes": self._spool.bytes,
            "spool_max_bytes": self._spool.max_bytes,
            "spool_path": str(self._spool.path),
            "last_error": self._last_error,
            "last_error_at": self._last_error_at,
            "producers_created": self._producers_created,
            "diverted": self._diverted,
            "rejected": self._rejected,
            "topic_mismatches": list(self._mismatches),
        }

    def retry_after_s(self) -> int:
        """Seconds a client refused for a full spool should wait (the next probe of the broker)."""
        return max(1, math.ceil(self._retry_in_s))

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers | None = None,
        *,
        on_delivery: OnDelivery | None = None,
        block: bool = True,
    ) -> None:
        """Hand one record over. ``on_delivery`` (called from another thread) learns whether it was
        delivered or spooled. With ``block=False`` a full spool raises :class:`SpoolFull`."""
        while True:
            with self._lock:
                if self._direct and self._trouble is None:
                    try:
                        if on_delivery is None:  # the producer's own report callback (no allocation)
                            if headers is None:
                                self._producer.produce(topic, value, key)  # type: ignore[union-attr]
                            else:
                                self._producer.produce(topic, value, key, headers=headers)  # type: ignore[union-attr]
                        else:
                            self._producer.produce(topic, value, key, headers=headers,  # type: ignore[union-attr]
                                                   on_delivery=partial(self._report, on_delivery))
                        return
                    except BufferError:
                        pass  # librdkafka's queue is full: let the broker take some (outside the lock)
                    except KafkaException as exc:
                        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                        if err is not None and err.code() in PERMANENT_ERRORS:
                            self._reject(topic, key, err, on_delivery)  # e.g. larger than message.max.bytes
                            return
                        self._set_trouble(f"produce failed: {err.str() if err is not None else exc}")
                        continue
                elif self._closed:
                    raise ProducerClosed(f"producer {self.name} is closed")
                elif self._mode is Mode.SPOOLING:
                    if self._spool_one((topic, key, value, headers), on_delivery, block):
                        return
                    continue
                else:  # diverting: the records librdkafka held go to the spool first
                    self._cond.wait(0.05)
                    continue
            time.sleep(0.002)

    def produce_batch(
        self,
        records: Sequence[Record],
        on_delivery: Sequence[OnDelivery | None] | None = None,
        *,
        block: bool = True,
    ) -> None:
        """Hand several records over; while spooling they are appended all or none (with
        ``block=False`` a batch that does not fit raises :class:`SpoolFull` and nothing is kept)."""
        callbacks = list(on_delivery) if on_delivery is not None else [None] * len(records)
        with self._cond:
            if self._closed:
                raise ProducerClosed(f"producer {self.name} is closed")
            if self._mode is Mode.SPOOLING:
                try:
                    self._spool.append(records)
                except SpoolFull as exc:
                    if not block:
                        raise SpoolFull(exc.path, exc.max_bytes, self.retry_after_s()) from None
                else:
                    for (topic, *_rest), callback in zip(records, callbacks, strict=True):
                        if callback is not None:
                            callback(Delivery(topic, spooled=True))
                    return
        for (topic, key, value, headers), callback in zip(records, callbacks, strict=True):
            self.produce(topic, value, key, headers, on_delivery=callback, block=block)

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every record is delivered (the spool empty, librdkafka's queue empty);
        returns the number still waiting when ``timeout`` ran out (0: all delivered)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                waiting = len(self._spool) + (len(self._producer) if self._producer is not None else 0)
                if self._mode is Mode.DIRECT and waiting == 0:
                    return 0
                if self._closed or (deadline is not None and time.monotonic() >= deadline):
                    return max(waiting, 1)
                self._cond.wait(0.05)

    def settle(self) -> None:
        """Wait until every record handed over so far is safe: acknowledged by the broker, or
        committed to the spool on disk (a sink calls this before its batch counts as written)."""
        while True:
            with self._cond:
                if self._closed:
                    return
                if self._mode is Mode.SPOOLING:
                    self._spool.sync()
                    return
                if self._mode is Mode.DIRECT and self._trouble is None and self._producer is not None:
                    if len(self._producer) == 0:
                        return
                    wait = SETTLE_POLL_S
                else:
                    wait = 0.05
            time.sleep(wait)

    def close(self, timeout: float = 10.0) -> None:
        """Stop: deliver what librdkafka holds and what is spooled within ``timeout`` (a broker
        that is away gets one more try at once, not the whole timeout); what cannot be delivered
        stays in the spool on disk, for the next run under the same name."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._direct = False
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        self._deliver_before_closing(deadline)
        self._closing.set()
        self._wake.set()
        self._thread.join()
        producer, self._producer = self._producer, None
        if producer is not None:
            remaining = producer.flush(max(0.0, deadline - time.monotonic()))
            if remaining:
                self._take_back(producer, "closing")
        self._spool_returned()
        left = len(self._spool)
        if left:
            log.warning("producer %s: %d records (%d bytes) stay in %s; the next run under this name delivers them",
                        self.name, left, self._spool.bytes, self._spool.path,
                        extra={"producer": self.name, "spooled_records": left})
        self._spool.close()

    def _deliver_before_closing(self, deadline: float) -> None:
        """Wait until nothing is spooled or in flight, the deadline passes, or a try to reach the
        broker made after the close was asked for fails."""
        failed_before = self._failed_tries
        self._wake.set()  # a producer waiting to try the broker again tries now
        with self._cond:
            while time.monotonic() < deadline and self._failed_tries == failed_before:
                in_flight = len(self._producer) if self._producer is not None else 0
                if self._mode is Mode.DIRECT and len(self._spool) == 0 and in_flight == 0:
                    return
                self._cond.wait(0.05)

    def __enter__(self) -> ResilientProducer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ librdkafka callbacks

    def _on_error(self, generation: int, err: KafkaError) -> None:
        """librdkafka's error_cb (inside poll) of the producer of ``generation``."""
        if generation != self._generation:
            return  # a producer that was already given up
        if err.fatal():
            self._set_trouble(f"fatal producer error: {err.str()}")
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._set_trouble(f"every broker is down ({self.bootstrap}): {err.str()}")
        else:
            self._note_error(err.str())

    def _report_plain(self, err: KafkaError | None, msg: Message) -> None:
        """Delivery report of a record produced in direct mode without a callback of its own."""
        if err is not None:
            self._report(None, err, msg)

    def _report(self, on_delivery: OnDelivery | None, err: KafkaError | None, msg: Message) -> None:
        """Delivery report of a record produced in direct mode."""
        if err is None:
            if on_delivery is not None:
                on_delivery(Delivery(msg.topic() or "", msg.partition(), msg.offset()))
            return
        if err.code() in PERMANENT_ERRORS:
            self._reject(msg.topic() or "", msg.key(), err, on_delivery)
            return
        record: Record = (msg.topic() or "", msg.key(), msg.value(), as_headers(msg.headers()))
        with self._cond:
            self._returned.append((record, on_delivery))
        if err.code() not in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
            self._set_trouble(f"delivery failed: {err.str()}")

    def _reject(self, topic: str, key: bytes | None, err: KafkaError, on_delivery: OnDelivery | None) -> None:
        self._rejected += 1
        self._note_error(f"record refused by the broker: {err.str()}")
        log.error("producer %s: the broker refused a record of %s (key %r): %s; it is not retried",
                  self.name, topic, key, err.str(), extra={"producer": self.name, "topic": topic})
        if on_delivery is not None:
            on_delivery(Delivery(topic, error=err.str()))

    # ------------------------------------------------------------------ state changes

    def _set_mode(self, mode: Mode) -> None:
        self._mode = mode
        self._direct = mode is Mode.DIRECT and self._producer is not None and not self._closed

    def _note_error(self, text: str) -> None:
        self._last_error = text
        self._last_error_at = _now()

    def _set_trouble(self, why: str) -> None:
        self._note_error(why)
        if self._trouble is None:
            self._trouble = why

    def _spool_one(self, record: Record, on_delivery: OnDelivery | None, block: bool) -> bool:
        """Append under the lock; False (after waiting a little) when full and ``block``."""
        try:
            self._spool.append([record])
        except SpoolFull as exc:
            if not block:
                raise SpoolFull(exc.path, exc.max_bytes, self.retry_after_s()) from None
            if self._full_since is None:
                self._full_since = time.monotonic()
                log.warning("producer %s: spool %s is full (%d bytes); waiting for the broker",
                            self.name, self._spool.path, self._spool.max_bytes, extra={"producer": self.name})
            self._cond.wait(0.5)
            return False
        if on_delivery is not None:
            on_delivery(Delivery(record[0], spooled=True))
        return True

    def _take_back(self, producer: Producer, why: str) -> None:
        """Purge ``producer``; its records come back through delivery reports into ``_returned``."""
        with contextlib.suppress(KafkaException, RuntimeError):
            producer.purge(in_queue=True, in_flight=True, blocking=False)
        deadline = time.monotonic() + 10
        while len(producer) and time.monotonic() < deadline:
            with contextlib.suppress(KafkaException, RuntimeError):
                producer.poll(0.1)
        if len(producer):
            log.error("producer %s: %d records could not be taken back from librdkafka (%s)",
                      self.name, len(producer), why, extra={"producer": self.name})

    def _spool_returned(self) -> None:
        with self._cond:
            returned = list(self._returned)
            self._returned.clear()
            if returned:
                self._spool.append([r[0] for r in returned], force=True)
                self._spool.sync()
        for record, on_delivery in returned:
            if on_delivery is not None:
                on_delivery(Delivery(record[0], spooled=True))

    def _divert(self) -> None:
        """direct → spooling (background thread)."""
        with self._cond:
            why = self._trouble or "unknown"
            producer, self._producer = self._producer, None
            self._set_mode(Mode.DIVERTING)
        self._diverted += 1
        if self._on_retry is not None:
            self._on_retry()
        log.warning("producer %s: %s; spooling records to %s until the broker is back",
                    self.name, why, self._spool.path, extra={"producer": self.name})
        if producer is not None:
            self._take_back(producer, why)
        self._spool_returned()
        with self._cond:
            self._set_mode(Mode.SPOOLING)
            self._trouble = None
            self._cond.notify_all()

    # ------------------------------------------------------------------ the background thread

    def _run(self) -> None:
        while not self._closing.is_set():
            try:
                self._round()
            except Exception as exc:  # never let the thread die: records would wait forever
                self._note_error(f"{type(exc).__name__}: {exc}")
                log.exception("producer %s: unexpected error in the background thread; carrying on", self.name,
                              extra={"producer": self.name})
                self._closing.wait(1.0)

    def _round(self) -> None:
        if self._mode is not Mode.DIRECT:
            self._drain()
            return
        producer = self._producer
        if producer is not None:
            try:
                producer.poll(POLL_S)
            except KafkaException as exc:
                self._set_trouble(f"poll failed: {exc}")
        if self._trouble is not None or self._returned:
            self._divert()

    def _sleep(self, seconds: float) -> None:
        self._retry_in_s = seconds
        self._spool.sync()
        self._wake.wait(seconds)
        self._wake.clear()

    def _before_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        self._note_error(str(exc))
        with self._cond:
            self._failed_tries += 1
            self._cond.notify_all()
        if self._on_retry is not None:
            self._on_retry()
        if state.attempt_number == 1 or state.attempt_number % 20 == 0:
            log.warning("producer %s: %s; %d records (%d bytes) spooled, retrying (attempt %d)", self.name, exc,
                        len(self._spool), self._spool.bytes, state.attempt_number,
                        extra={"producer": self.name, "spooled_records": len(self._spool)})

    def _drain(self) -> None:
        """Send the spool until it is empty (then go direct) or the producer closes."""
        retrying = Retrying(
            retry=retry_if_exception_type(_Away),
            wait=wait_exponential_jitter(multiplier=RETRY_INITIAL_S, max=RETRY_MAX_S, jitter=RETRY_INITIAL_S),
            stop=stop_never,
            sleep=self._sleep,
            before_sleep=self._before_retry,
            reraise=True,
        )
        with contextlib.suppress(_Closing):
            retrying(self._drain_all)

    def _drain_all(self) -> None:
        sent = 0
        while True:
            if self._closing.is_set():
                raise _Closing
            if self._producer is None:
                self._producer = self._connect(CONNECT_TIMEOUT_S)
            batch = self._spool.head(DRAIN_BATCH_RECORDS, DRAIN_BATCH_BYTES)
            if not batch:
                with self._cond:
                    if len(self._spool) == 0:  # nothing appended meanwhile: go direct
                        self._set_mode(Mode.DIRECT)
                        self._trouble = None
                        self._full_since = None
                        self._retry_in_s = 1.0
                        self._cond.notify_all()
                        if sent or self._diverted:
                            log.info("producer %s: the broker is back; %d spooled records delivered",
                                     self.name, sent, extra={"producer": self.name, "delivered": sent})
                        return
                continue
            self._send(batch)
            sent += len(batch)
            self._spool.drop_through(batch[-1][1])
            with self._cond:
                self._cond.notify_all()  # room in the spool

    def _send(self, batch: list[tuple[Record, int]]) -> None:
        producer = self._producer
        assert producer is not None
        failed: list[KafkaError] = []

        def report(record: Record, err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                return
            if err.code() in PERMANENT_ERRORS:
                self._reject(record[0], record[1], err, None)
            else:
                failed.append(err)

        for record, _seq in batch:
            topic, key, value, headers = record
            while True:
                try:
                    producer.produce(topic, value, key, headers=headers, on_delivery=partial(report, record))
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as exc:
                    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                    if err is not None and err.code() in PERMANENT_ERRORS:
                        self._reject(topic, key, err, None)
                        break
                    self._discard_producer()
                    raise _Away(f"produce failed: {err.str() if err is not None else exc}") from None
        deadline = time.monotonic() + DRAIN_ACK_TIMEOUT_S
        remaining = len(producer)
        while remaining and not failed and self._trouble is None and time.monotonic() < deadline:
            remaining = producer.flush(POLL_S)
        if failed or remaining or self._trouble is not None:
            why = failed[0].str() if failed else self._trouble or f"{remaining} records not acknowledged in time"
            self._discard_producer()
            raise _Away(f"the broker did not take the spooled records ({why})")

    def _discard_producer(self) -> None:
        producer, self._producer = self._producer, None
        self._trouble = None
        if producer is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                producer.purge(in_queue=True, in_flight=True, blocking=False)
                producer.flush(0)

    def _connect(self, timeout: float) -> Producer:
        """A new producer (new producer id) once the broker answers and every topic exists."""
        self._generation += 1
        producer = Producer({**self._config, "error_cb": partial(self._on_error, self._generation),
                             "on_delivery": self._report_plain})
        self._producers_created += 1
        self._trouble = None
        try:
            producer.list_topics(timeout=timeout)
        except KafkaException as exc:
            with contextlib.suppress(KafkaException, RuntimeError):
                producer.flush(0)
            raise _Away(f"no broker answers at {self.bootstrap} ({exc.args[0].str() if exc.args else exc})") from None
        producer.poll(0)  # serve what librdkafka reported while it was connecting (brokers down, ...)
        self._trouble = None  # and forget it: the broker answers now
        partitions = self.options.partitions
        if partitions is None:
            return producer
        try:
            created = create_topics(self.bootstrap, partitions, self.options.topics, timeout=timeout * 2)
            mismatches = partition_mismatches(self.bootstrap, partitions, self.options.topics, timeout)
        except TopicError as exc:
            raise _Away(str(exc)) from None
        if created:
            log.warning("producer %s: created missing topics %s with %d partitions", self.name, ",".join(created),
                        partitions, extra={"producer": self.name})
        self._mismatches = [m.message() for m in mismatches]
        for m in self._mismatches:
            log.error("producer %s: %s", self.name, m, extra={"producer": self.name})
        return producer


def _open_spool(options: ProducerOptions, name: str) -> DiskSpool:
    """The spool in ``options.spool_dir``, else (not writable, e.g. a container without a data
    volume) under the temporary folder, with a warning."""
    try:
        return open_spool(options.spool_dir, name, options.spool_max_bytes)
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / "racewire-spool"
        log.warning("producer %s: cannot spool in %s (%s); spooling in %s instead (set RACEWIRE_PRODUCER_SPOOL_DIR "
                    "or RACEWIRE_DATA_DIR to a writable folder that outlives the process)", name, options.spool_dir,
                    exc, fallback, extra={"producer": name})
        return open_spool(fallback, name, options.spool_max_bytes)


class _Closing(Exception):
    """The producer is closing while it waits for the broker."""


def produce_all(producer: ResilientProducer, records: Iterable[Record]) -> int:
    """Produce every record (blocking on a full spool); returns how many."""
    n = 0
    for topic, key, value, headers in records:
        producer.produce(topic, value, key, headers)
        n += 1
    return n
