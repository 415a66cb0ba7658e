"""Avro schemas as the registry sees them: validation, the normal form schemas are compared by, and
the compatibility check between two schemas under a compatibility level. Pure: no I/O, no state."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import avro.errors
import avro.schema
import fastavro
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from infra.registry.errors import InvalidSchemaError, RegistryError

COMPATIBILITY_LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
DEFAULT_COMPATIBILITY = "BACKWARD"

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})


@dataclass(frozen=True, slots=True)
class AvroSchema:
    """A validated Avro schema: the text served to clients, its normal form, its parsed form."""

    text: str
    canonical: str
    parsed: avro.schema.Schema


def parse_avro(text: str) -> AvroSchema:
    """Validate an Avro schema (names, types, defaults) and compute its normal form.

    >>> parse_avro('{"type": "record", "name": "A", "namespace": "n", "fields": []}').canonical
    '{"fields":[],"name":"n.A","type":"record"}'
    """
    try:
        obj = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise InvalidSchemaError(f"Invalid schema: not JSON: {exc}") from exc
    try:
        fastavro.parse_schema(json.loads(text))  # also checks that defaults match their types
        parsed = avro.schema.parse(text)
    except Exception as exc:  # both parsers raise several error types for bad schemas
        raise InvalidSchemaError(f"Invalid schema: {exc}") from exc
    compact = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return AvroSchema(compact, canonical_form(obj), parsed)


def canonical_form(schema: Any) -> str:
    """The normal form schemas are compared by: every named type by its full name, no
    ``namespace`` attributes, attributes sorted, no whitespace. Docs, defaults, aliases and other
    attributes are kept (they matter to readers), only their spelling is normalised."""
    return json.dumps(_normalise(schema, ""), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _normalise(node: Any, namespace: str) -> Any:
    if isinstance(node, str):
        return node if node in _PRIMITIVES else _full_name(node, namespace)
    if isinstance(node, list):
        return [_normalise(n, namespace) for n in node]
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if kind in _NAMED:
        full = _full_name(node["name"], node.get("namespace") or namespace)
        inner = full.rpartition(".")[0]
        out = {k: v for k, v in node.items() if k != "namespace"}
        out["name"] = full
        if isinstance(out.get("aliases"), list):
            out["aliases"] = [_full_name(a, inner) for a in out["aliases"]]
        if isinstance(out.get("fields"), list):
            out["fields"] = [{**f, "type": _normalise(f["type"], inner)} for f in out["fields"]]
        return out
    if kind == "array":
        return {**node, "items": _normalise(node["items"], namespace)}
    if kind == "map":
        return {**node, "values": _normalise(node["values"], namespace)}
    if isinstance(kind, dict | list):
        return {**node, "type": _normalise(kind, namespace)}
    if set(node) == {"type"}:
        return _normalise(kind, namespace)
    return node


_INCOMPATIBILITY_TEXT = {
    "reader_field_missing_default_value": "field without a default that the writer lacks",
    "type_mismatch": "type mismatch",
    "missing_enum_symbols": "enum symbols the reader lacks, and no enum default",
    "missing_union_branch": "union branch the reader lacks",
    "name_mismatch": "named type renamed without an alias",
    "fixed_size_mismatch": "fixed size changed",
}


def _read_problems(reader: AvroSchema, writer: AvroSchema, direction: str) -> list[str]:
    try:
        result = ReaderWriterCompatibilityChecker().get_compatibility(reader.parsed, writer.parsed)
    except Exception as exc:  # the checker raises on schema shapes it does not know
        return [f"{direction}: cannot check ({exc})"]
    if result.compatibility is not SchemaCompatibilityType.incompatible:
        return []
    kinds = sorted({i.value for i in result.incompatibilities})
    what = "; ".join(f"{k.upper()} ({_INCOMPATIBILITY_TEXT.get(k, k)})" for k in kinds)
    where = sorted(result.locations - {"/"}) or ["/"]
    return [f"{direction}: {what} at {', '.join(where)}: {'; '.join(sorted(result.messages))}"]


def compatibility_problems(
    new: AvroSchema | str, old: AvroSchema | str, level: str = DEFAULT_COMPATIBILITY
) -> list[str]:
    """Why ``new`` may not follow ``old`` under ``level``; an empty list when it may.

    ``BACKWARD``: data written with ``old`` is readable with ``new``; ``FORWARD``: data written
    with ``new`` is readable with ``old``; ``FULL``: both; ``NONE``: anything goes. A
    ``*_TRANSITIVE`` level checks this pair like its plain level does; the caller decides which
    earlier versions to check. The registry uses this very function.

    >>> old = '{"type": "record", "name": "A", "fields": []}'
    >>> compatibility_problems('{"type": "record", "name": "A", "fields": '
    ...                        '[{"name": "x", "type": "int", "default": 0}]}', old)
    []
    """
    base = normalise_level(level).removesuffix("_TRANSITIVE")
    if base == "NONE":
        return []
    new_s = new if isinstance(new, AvroSchema) else parse_avro(new)
    old_s = old if isinstance(old, AvroSchema) else parse_avro(old)
    problems: list[str] = []
    if base in ("BACKWARD", "FULL"):
        problems += _read_problems(new_s, old_s, "new schema cannot read data written with old")
    if base in ("FORWARD", "FULL"):
        problems += _read_problems(old_s, new_s, "old schema cannot read data written with new")
    return problems


def normalise_level(level: str) -> str:
    """Upper-case a compatibility level; 42203 if it is not one."""
    value = str(level).strip().upper()
    if value not in COMPATIBILITY_LEVELS:
        raise RegistryError(
            422,
            42203,
            f"Invalid compatibility level '{level}'. Valid values are "
            + ", ".join(lvl.lower() for lvl in COMPATIBILITY_LEVELS),
        )
    return value
