"""Avro codec in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro body.

Schemas are registered (subject ``{topic}-value``, TopicNameStrategy) in any Confluent-compatible
schema registry reached through :class:`confluent_kafka.schema_registry.SchemaRegistryClient`:
an HTTP URL, racewire's own registry, or ``mock://`` for in-process tests. Records written here can
be read by a standard ``confluent_kafka.schema_registry.avro.AvroDeserializer`` and vice versa.

Decoding looks the writer schema up by id (cached), so records written with an older version of
a schema still decode; they are then resolved to the current (reader) schema.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from schemas.model import ALL_TYPES

MAGIC = 0
_HEADER = struct.Struct(">bI")

#: topic → schema file in ``schemas/avro``
SCHEMA_FILES: dict[str, str] = {
    "f1.race.session": "session.avsc",
    "f1.timing.lap": "lap.avsc",
    "f1.telemetry.car": "telemetry.avsc",
    "f1.race.control": "control.avsc",
    "f1.weather": "weather.avsc",
    "f1.race.leaderboard": "leaderboard.avsc",
    "f1.race.events": "event.avsc",
    "f1.driver.stints": "stint.avsc",
    "f1.strategy.recommendations": "recommendation.avsc",
    "f1.race.commentary": "commentary.avsc",
    "f1.deadletter": "deadletter.avsc",
}
INPUT_TOPICS = ("f1.race.session", "f1.timing.lap", "f1.telemetry.car", "f1.race.control", "f1.weather")
OUTPUT_TOPICS = tuple(t for t in SCHEMA_FILES if t not in INPUT_TOPICS)


class CodecError(ValueError):
    """A record could not be encoded or decoded; ``error_type`` classifies why."""

    def __init__(self, message: str, error_type: str = "DECODE") -> None:
        super().__init__(message)
        self.error_type = error_type


@cache
def schema_text(topic: str) -> str:
    """The ``.avsc`` text of a topic's value schema."""
    try:
        name = SCHEMA_FILES[topic]
    except KeyError:
        raise KeyError(f"no schema for topic {topic!r}; known: {sorted(SCHEMA_FILES)}") from None
    return resources.files("schemas").joinpath("avro", name).read_text(encoding="utf-8")


@cache
def parsed_schema(topic: str) -> Any:
    return fastavro.parse_schema(json.loads(schema_text(topic)))


def subject(topic: str) -> str:
    return f"{topic}-value"


@dataclass(slots=True)
class _Writer:
    schema_id: int
    header: bytes
    schema: Any


@dataclass(slots=True)
class _Reader:
    topic: str
    writer_schema: Any
    reader_schema: Any | None  # None when writer == reader
    #: the decoded dict's values are in the dataclass's field order and need no conversion, so the
    #: record can be built positionally (the hot path: telemetry)
    positional: bool = False


def _positional(topic: str, schema: Any) -> bool:
    cls = ALL_TYPES[topic]
    if "from_dict" in vars(cls):  # records with nested parts or enums convert field by field
        return False
    names = [f["name"] for f in schema["fields"]]
    return names == [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]


class Codec:
    """Encodes domain records to Confluent-framed Avro and decodes them back.

    >>> codec = Codec(make_registry_client("mock://doctest"))
    >>> from schemas.model import Control, ControlKind
    >>> raw = codec.encode("f1.race.control", Control("e1", "r1", 0, ControlKind.RACE_START))
    >>> raw[0], codec.decode(raw)[0]
    (0, 'f1.race.control')
    """

    def __init__(self, registry: SchemaRegistryClient) -> None:
        self.registry = registry
        self._writers: dict[str, _Writer] = {}
        self._readers: dict[int, _Reader] = {}

    # ------------------------------------------------------------------ writing
    def register_all(self) -> dict[str, int]:
        """Register every topic's schema; returns topic → schema id."""
        return {topic: self._writer(topic).schema_id for topic in SCHEMA_FILES}

    def _writer(self, topic: str) -> _Writer:
        w = self._writers.get(topic)
        if w is None:
            schema_id = self.registry.register_schema(subject(topic), Schema(schema_text(topic), "AVRO"))
            w = _Writer(schema_id, _HEADER.pack(MAGIC, schema_id), parsed_schema(topic))
            self._writers[topic] = w
            self._readers.setdefault(schema_id, _Reader(topic, w.schema, None, _positional(topic, w.schema)))
        return w

    def encode_dict(self, topic: str, data: dict[str, Any]) -> bytes:
        w = self._writer(topic)
        buf = io.BytesIO()
        buf.write(w.header)
        try:
            fastavro.schemaless_writer(buf, w.schema, data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CodecError(f"cannot encode record for {topic}: {exc}", "INVALID") from exc
        return buf.getvalue()

    def encode(self, topic: str, record: Any) -> bytes:
        return self.encode_dict(topic, record.to_dict())

    # ------------------------------------------------------------------ reading
    def schema_id(self, data: bytes) -> int:
        if len(data) < 5 or data[0] != MAGIC:
            raise CodecError(
                "not Confluent-framed Avro: expected magic byte 0 and a 4-byte schema id, "
                f"got {len(data)} bytes starting {bytes(data[:5])!r}",
                "DECODE",
            )
        return int(_HEADER.unpack_from(data)[1])

    def _reader(self, schema_id: int) -> _Reader:
        r = self._readers.get(schema_id)
        if r is not None:
            return r
        try:
            registered = self.registry.get_schema(schema_id)
        except Exception as exc:  # the registry client raises several error types
            raise CodecError(f"unknown schema id {schema_id}: {exc}", "UNKNOWN_SCHEMA") from exc
        writer: Any = fastavro.parse_schema(json.loads(registered.schema_str or "null"))
        name = writer.get("name", "") if isinstance(writer, dict) else ""
        topic = _topic_for_schema_name(name)
        if topic is None:
            raise CodecError(
                f"schema id {schema_id} ({name or 'unnamed'}) is not a racewire schema",
                "UNKNOWN_SCHEMA",
            )
        reader = parsed_schema(topic)
        same = json.dumps(writer, sort_keys=True) == json.dumps(reader, sort_keys=True)
        r = _Reader(topic, writer, None if same else reader, _positional(topic, reader))
        self._readers[schema_id] = r
        return r

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Decode framed bytes; returns the topic the schema belongs to and the record as a dict."""
        r = self._reader(self.schema_id(data))
        try:
            rec = fastavro.schemaless_reader(io.BytesIO(data[5:]), r.writer_schema, r.reader_schema)
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, ...
            raise CodecError(f"corrupt Avro body for {r.topic}: {exc!r}", "DECODE") from exc
        if not isinstance(rec, dict):
            raise CodecError(f"corrupt Avro body for {r.topic}: not a record", "DECODE")
        return r.topic, rec

    def decode_record(self, data: bytes) -> Any:
        """Decode framed bytes into the topic's domain object."""
        r = self._readers.get(int.from_bytes(data[1:5], "big")) if len(data) > 4 and data[0] == MAGIC else None
        if r is None:
            r = self._reader(self.schema_id(data))
        body = io.BytesIO(data)
        body.seek(5)
        try:
            rec = fastavro.schemaless_reader(body, r.writer_schema, r.reader_schema)
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, ...
            raise CodecError(f"corrupt Avro body for {r.topic}: {exc!r}", "DECODE") from exc
        if not isinstance(rec, dict):
            raise CodecError(f"corrupt Avro body for {r.topic}: not a record", "DECODE")
        topic = r.topic
        try:
            if r.positional:
                return ALL_TYPES[topic](*rec.values())
            return ALL_TYPES[topic].from_dict(rec)
        except (ValueError, TypeError, KeyError) as exc:
            raise CodecError(f"invalid {topic} record: {exc}", "INVALID") from exc


@cache
def _schema_names() -> dict[str, str]:
    return {json.loads(schema_text(t))["namespace"] + "." + json.loads(schema_text(t))["name"]: t
            for t in SCHEMA_FILES}


def _topic_for_schema_name(name: str) -> str | None:
    return _schema_names().get(name)


def make_registry_client(url: str) -> SchemaRegistryClient:
    """A registry client for ``http(s)://…`` or ``mock://…`` (in-process) URLs."""
    return SchemaRegistryClient.new_client({"url": url})
