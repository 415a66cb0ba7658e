"""HTTP ingest: JSON input records checked against the topics' Avro schemas, then produced to Kafka.

:func:`to_datum` walks a record alongside its schema and turns JSON into the Avro datum (ISO 8601
strings or epoch milliseconds for ``timestamp-millis``), collecting every problem with the path of
the field (``record.lap_time_ms``), so a client learns exactly which field is wrong.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, partial
from typing import TYPE_CHECKING, Any

import fastavro
from fastavro.validation import validate

from dataflows.connectors.producer import Delivery, ProducerOptions, ResilientProducer
from dataflows.connectors.spool import Record
from schemas.codec import INPUT_TOPICS, schema_text

if TYPE_CHECKING:
    from schemas.settings import Settings

log = logging.getLogger("racewire.serving.ingest")

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1


@dataclass(slots=True, frozen=True)
class FieldError:
    loc: tuple[str | int, ...]
    msg: str

    def to_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": "avro"}


@cache
def expanded_schema(topic: str) -> Any:
    """The topic's value schema with every named type expanded in place."""
    return fastavro.parse_schema(json.loads(schema_text(topic)), expand=True)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


def _schema_label(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return " or ".join(_schema_label(s) for s in schema)
    if isinstance(schema, dict):
        if "logicalType" in schema:
            return f"{schema['logicalType']} ({schema['type']})"
        if schema.get("type") == "enum":
            return "one of " + ", ".join(schema["symbols"])
        return str(schema.get("type"))
    return str(schema)


def _timestamp(value: Any, loc: tuple[str | int, ...], errors: list[FieldError]) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            errors.append(FieldError(loc, f"not an ISO 8601 date-time: {value!r}"))
            return None
        if parsed.tzinfo is None:
            errors.append(FieldError(loc, f"date-time {value!r} has no time zone; add 'Z' or an offset"))
            return None
        return parsed
    errors.append(FieldError(loc, f"expected an ISO 8601 date-time or epoch milliseconds, got {_type_name(value)}"))
    return None


def _convert(value: Any, schema: Any, loc: tuple[str | int, ...], errors: list[FieldError]) -> Any:
    """JSON value → Avro datum for ``schema``; appends to ``errors`` and returns None when invalid."""
    if isinstance(schema, list):  # union: null first when the value is null, else the first branch that fits
        if value is None and "null" in schema:
            return None
        for branch in schema:
            if branch == "null":
                continue
            trial: list[FieldError] = []
            out = _convert(value, branch, loc, trial)
            if not trial:
                return out
        errors.append(FieldError(loc, f"expected {_schema_label(schema)}, got {_type_name(value)}"))
        return None
    if isinstance(schema, dict):
        kind = schema.get("type")
        logical = schema.get("logicalType")
        if logical in ("timestamp-millis", "timestamp-micros"):
            return _timestamp(value, loc, errors)
        if kind == "record":
            return _record(value, schema, loc, errors)
        if kind == "enum":
            if not isinstance(value, str) or value not in schema["symbols"]:
                errors.append(FieldError(loc, f"expected one of {', '.join(schema['symbols'])}, got {value!r}"))
                return None
            return value
        if kind == "array":
            if not isinstance(value, list):
                errors.append(FieldError(loc, f"expected an array, got {_type_name(value)}"))
                return None
            return [_convert(v, schema["items"], (*loc, i), errors) for i, v in enumerate(value)]
        if kind == "map":
            if not isinstance(value, dict):
                errors.append(FieldError(loc, f"expected an object, got {_type_name(value)}"))
                return None
            return {k: _convert(v, schema["values"], (*loc, k), errors) for k, v in value.items()}
        return _convert(value, kind, loc, errors)
    return _primitive(value, schema, loc, errors)


def _primitive(value: Any, schema: str, loc: tuple[str | int, ...], errors: list[FieldError]) -> Any:
    ok = False
    if schema == "null":
        ok = value is None
    elif schema == "boolean":
        ok = isinstance(value, bool)
    elif schema in ("int", "long"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        lo, hi = (INT_MIN, INT_MAX) if schema == "int" else (LONG_MIN, LONG_MAX)
        ok = isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
        if isinstance(value, int) and not isinstance(value, bool) and not ok:
            errors.append(FieldError(loc, f"{value} is out of range for {schema}"))
            return None
    elif schema in ("float", "double"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif schema == "string":
        ok = isinstance(value, str)
    elif schema == "bytes":
        ok = isinstance(value, str)
        if ok:
            value = value.encode("utf-8")
    if not ok:
        errors.append(FieldError(loc, f"expected {schema}, got {_type_name(value)}"))
        return None
    return value


def _record(value: Any, schema: dict[str, Any], loc: tuple[str | int, ...], errors: list[FieldError]) -> Any:
    if not isinstance(value, dict):
        errors.append(FieldError(loc, f"expected an object ({schema.get('name')}), got {_type_name(value)}"))
        return None
    out: dict[str, Any] = {}
    names = set()
    for f in schema["fields"]:
        name = f["name"]
        names.add(name)
        if name in value:
            out[name] = _convert(value[name], f["type"], (*loc, name), errors)
        elif "default" in f:
            out[name] = f["default"]
        else:
            errors.append(FieldError((*loc, name), f"field required ({_schema_label(f['type'])})"))
    for extra in value:
        if extra not in names:
            errors.append(FieldError((*loc, extra), f"unknown field for {schema.get('name')}; "
                                     f"known: {', '.join(sorted(names))}"))
    return out


def to_datum(topic: str, record: Any, loc: tuple[str | int, ...] = ("body", "record")
             ) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """Check a JSON record against the topic's schema; returns the Avro datum and the problems found.

    >>> datum, errors = to_datum("f1.race.control", {"event_id": "e", "race_id": "r", "ts_ms": "x",
    ...                                               "kind": "RACE_START"})
    >>> [(e.loc, e.msg) for e in errors]
    [(('body', 'record', 'ts_ms'), 'expected long, got string')]
    """
    if topic not in INPUT_TOPICS:
        return None, [FieldError((*loc[:-1], "topic"),
                                 f"unknown input topic {topic!r}; expected one of {', '.join(INPUT_TOPICS)}")]
    schema = expanded_schema(topic)
    errors: list[FieldError] = []
    datum = _convert(record, schema, loc, errors)
    if not errors:  # a safety net: fastavro must agree
        try:
            validate(datum, schema, raise_errors=True)
        except fastavro.validation.ValidationError as exc:
            for e in exc.errors:
                name = str(getattr(e, "field", "") or "").rsplit(".", 1)[-1]
                errors.append(FieldError((*loc, name) if name else loc, f"invalid value {getattr(e, 'datum', '')!r}"))
    return (datum if not errors else None), errors


def record_key(topic: str, datum: dict[str, Any]) -> str:
    """Kafka key per DESIGN: ``race_id:driver_number`` for per-car topics, else ``race_id``."""
    if topic in ("f1.timing.lap", "f1.telemetry.car"):
        return f"{datum['race_id']}:{datum['driver_number']}"
    return str(datum["race_id"])


class NotConfigured(RuntimeError):
    pass


class KafkaIngest:
    """The ingest's :class:`~dataflows.connectors.producer.ResilientProducer` plus the Avro codec.

    The producer is made on the first request, off the event loop (it waits up to a few seconds
    for the broker). While the broker is away records are spooled to disk and the request is
    answered at once (``"spooled": true`` per record); they are delivered, in order, when it is
    back. A batch that does not fit in the spool raises
    :class:`~dataflows.connectors.spool.SpoolFull` (its ``retry_after_s`` is for ``Retry-After``).
    :meth:`state` says how the producer is doing, for ``/api/health``.
    """

    def __init__(self, bootstrap: str, registry_url: str, options: ProducerOptions) -> None:
        from schemas.codec import Codec, make_registry_client

        self.bootstrap = bootstrap
        self.options = options
        self.codec = Codec(make_registry_client(registry_url))
        self.producer: ResilientProducer | None = None
        self._start_lock = threading.Lock()
        self._codec_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaIngest:
        """The ingest of a serving process (both Kafka and the registry must be configured);
        records are spooled under ``RACEWIRE_PRODUCER_SPOOL_DIR`` (default ``DATA_DIR/spool``)."""
        return cls(str(settings.kafka_bootstrap), str(settings.schema_registry_url),
                   ProducerOptions.from_settings(settings))

    def start(self) -> None:
        """Make the producer now (it delivers what a previous process left in the spool)."""
        self._producer()

    def _producer(self) -> ResilientProducer:
        with self._start_lock:
            if self.producer is None:
                self.producer = ResilientProducer(
                    {"bootstrap.servers": self.bootstrap, "linger.ms": 2, "delivery.report.only.error": False},
                    self.options, name="ingest")
            return self.producer

    def state(self) -> dict[str, Any]:
        """The producer's state (connected, spooled records and bytes, last error, ...)."""
        if self.producer is None:
            return {"name": "ingest", "connected": None, "mode": "not started (no record ingested yet)",
                    "spooled_records": 0, "spooled_bytes": 0, "spool_max_bytes": self.options.spool_max_bytes,
                    "last_error": None}
        return self.producer.state()

    def _encode(self, topic: str, datum: dict[str, Any]) -> bytes:
        with self._codec_lock:  # registers the schema on first use (a registry call)
            return self.codec.encode_dict(topic, datum)

    async def produce(self, items: list[tuple[str, dict[str, Any]]], timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Produce ``items``; one result per item: delivered (partition, offset), spooled, or still
        queued when ``timeout_s`` ran out (it will be delivered or spooled: nothing is dropped)."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[dict[str, Any]]] = [loop.create_future() for _ in items]

        def report(fut: asyncio.Future[dict[str, Any]], delivery: Delivery) -> None:
            loop.call_soon_threadsafe(_resolve, fut, delivery.to_dict())

        def hand_over() -> None:
            records: list[Record] = [(t, record_key(t, d).encode(), self._encode(t, d), None) for t, d in items]
            callbacks = [partial(report, fut) for fut in futures]
            self._producer().produce_batch(records, callbacks, block=False)

        await asyncio.to_thread(hand_over)
        done, _pending = await asyncio.wait(futures, timeout=timeout_s)
        results = [f.result() if f in done else {"topic": t, "queued": True}
                   for f, (t, _d) in zip(futures, items, strict=True)]
        failed = [r for r in results if "error" in r]
        if failed:
            raise ConnectionError(f"the broker refused {len(failed)} record(s): {failed[0]['error']}")
        return results

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close(5)


def _resolve(fut: asyncio.Future[dict[str, Any]], result: dict[str, Any]) -> None:
    if not fut.done():
        fut.set_result(result)
