"""racewire's own schema registry: the part of Confluent Schema Registry's REST API clients use.

Local stacks and tests need a registry, and none installs here without a JVM; this one speaks the
REST API of Confluent Schema Registry that the Confluent clients call (Python
``SchemaRegistryClient`` / ``AvroSerializer`` / ``AvroDeserializer``, the Java serdes, ``curl``),
so racewire's :class:`~schemas.codec.Codec` and any standard Kafka + Avro consumer share one
source of schema ids. Only Avro schemas, without references, are supported.

Run it in the foreground (``SIGINT`` / ``SIGTERM`` stop it cleanly)::

    racewire registry --port 18081 --data-dir .racewire
    curl -s http://127.0.0.1:18081/subjects

or embed it (tests, the local stack)::

    with RegistryServer(tmp_path) as registry:
        codec = Codec(make_registry_client(registry.url))

Semantics follow Confluent's:

- ids are global (the same schema has the same id under every subject) and never reused;
  versions count per subject; registering a schema the subject already has returns its id;
- a new version must pass the subject's compatibility level (default ``BACKWARD``: the new schema
  reads data written with the latest one), else HTTP 409 with error code 409;
- schemas are compared by a normal form (full names, sorted attributes, no whitespace), so
  reformatting a schema is not a new version, while changing a doc or a default is;
- deletes are soft; ``?permanent=true`` after a soft delete removes a subject or version;
- errors are ``{"error_code": 40401, "message": "..."}`` with Confluent's codes and statuses.

State is one JSON file, ``<data_dir>/registry/registry.json``, replaced atomically
(temporary file, ``fsync``, ``os.replace``) on every change, so ids and versions survive
restarts; a lock file keeps two registries from sharing a data directory.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import errno
import http.client
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Annotated, Any, Self

import avro.errors
import avro.schema
import fastavro
import uvicorn
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
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
SCHEMA_TYPES = ("AVRO",)
STATE_FILE = "registry.json"
LOCK_FILE = "registry.lock"
_STATE_FORMAT = 1
_MAX_VERSION = 2**31 - 1


# ------------------------------------------------------------------------------------ errors


class RegistryError(Exception):
    """An API error: HTTP status, Confluent error code, message."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


class InvalidSchemaError(RegistryError):
    """The schema is not valid Avro, or uses what this registry does not support (422, 42201)."""

    def __init__(self, message: str) -> None:
        super().__init__(422, 42201, message)


def _subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def _version_not_found(subject: str, version: int | str) -> RegistryError:
    return RegistryError(404, 40402, f"Version {version} not found for subject '{subject}'.")


def _schema_not_found(what: str) -> RegistryError:
    return RegistryError(404, 40403, f"Schema {what} not found.")


class PortInUseError(OSError):
    """The port the registry should listen on is taken."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            errno.EADDRINUSE,
            f"port {port} on {host} is in use; pass --port or set RACEWIRE_REGISTRY_PORT to a free "
            f"port (or stop whatever listens on {port}) to start the schema registry",
        )
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return str(self.strerror)


class RegistryDataError(RuntimeError):
    """The registry's data directory cannot be used (unreadable state, or in use)."""


# ------------------------------------------------------------------------- schemas, compat

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


def _parse_version(version: str | int) -> int | None:
    """``None`` for the latest version, else the version number; 42202 if invalid."""
    text = str(version).strip().lower()
    if text in ("latest", "-1"):
        return None
    with contextlib.suppress(ValueError):
        number = int(text)
        if 1 <= number <= _MAX_VERSION:
            return number
    raise RegistryError(
        422,
        42202,
        f"The specified version '{version}' is not a valid version id. Allowed values are "
        f'between [1, {_MAX_VERSION}] and the string "latest"',
    )


def schema_from_request(body: Any) -> AvroSchema:
    """The schema of a register / lookup / compatibility request body."""
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise InvalidSchemaError(
            'Invalid schema: the request body must be a JSON object with a "schema" string, '
            'e.g. {"schema": "{\\"type\\": \\"string\\"}"}'
        )
    schema_type = body.get("schemaType") or "AVRO"
    if str(schema_type).upper() not in SCHEMA_TYPES:
        raise InvalidSchemaError(
            f"Unsupported schema type '{schema_type}': racewire's registry stores AVRO schemas only"
        )
    if body.get("references"):
        raise InvalidSchemaError(
            "Schema references are not supported by racewire's registry; inline the referenced "
            "named types in the schema"
        )
    if body.get("metadata") or body.get("ruleSet"):
        raise InvalidSchemaError(
            "Schema metadata and rule sets (data contracts) are not supported by racewire's "
            "registry; register the schema without them"
        )
    return parse_avro(body["schema"])


# ----------------------------------------------------------------------------------- store


def _empty_state() -> dict[str, Any]:
    return {
        "format": _STATE_FORMAT,
        "next_id": 1,
        "schemas": {},  # "id" -> {"schema": text, "schemaType": "AVRO"}
        "subjects": {},  # subject -> [{"version": n, "id": id, "deleted": bool}, ...]
        "subject_config": {},  # subject -> compatibility level
        "config": {"compatibilityLevel": DEFAULT_COMPATIBILITY},
    }


class SchemaStore:
    """Subjects, versions and schemas with Confluent's semantics; thread-safe; every change is
    written to ``directory/registry.json`` before it becomes visible."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE
        self._lock = threading.RLock()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._state = self._load()
        self._parsed: dict[int, AvroSchema] = {}
        self._by_canonical: dict[str, int] = {}
        self._reindex()

    # ------------------------------------------------------------------ persistence
    def _load(self) -> dict[str, Any]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return _empty_state()
        except OSError as exc:
            raise RegistryDataError(f"cannot read the registry state {self.path}: {exc}") from exc
        try:
            state = json.loads(raw)
            if state.get("format") != _STATE_FORMAT:
                raise ValueError(f"format {state.get('format')!r}, expected {_STATE_FORMAT}")
            for key, value in _empty_state().items():
                state.setdefault(key, value)
            for entries in state["subjects"].values():
                for e in entries:
                    int(e["version"]), int(e["id"]), bool(e["deleted"])
            int(state["next_id"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RegistryDataError(
                f"{self.path} is not a racewire registry state file ({exc}); fix it, or move it "
                "away to start with an empty registry"
            ) from exc
        return state  # type: ignore[no-any-return]

    def _reindex(self) -> None:
        self._by_canonical.clear()
        for schema_id in sorted(int(key) for key in self._state["schemas"]):
            self._by_canonical.setdefault(self._schema(schema_id).canonical, schema_id)

    def _write(self, state: dict[str, Any]) -> None:
        tmp = self.directory / f".{STATE_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(state, f, indent=1, sort_keys=True, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            with contextlib.suppress(OSError):  # make the rename itself durable, where possible
                fd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise RegistryError(
                500, 50001, f"Error in the backend data store: cannot write {self.path}: {exc}"
            ) from exc

    @contextlib.contextmanager
    def _change(self) -> Iterator[dict[str, Any]]:
        """Edit a copy of the state; it is written, then swapped in, only if the block succeeds."""
        with self._lock:
            draft = copy.deepcopy(self._state)
            yield draft
            self._write(draft)
            self._state = draft

    # ------------------------------------------------------------------ helpers
    def _schema(self, schema_id: int) -> AvroSchema:
        parsed = self._parsed.get(schema_id)
        if parsed is None:
            entry = self._state["schemas"].get(str(schema_id))
            if entry is None:
                raise _schema_not_found(str(schema_id))
            parsed = parse_avro(entry["schema"])
            self._parsed[schema_id] = parsed
        return parsed

    def _entries(self, subject: str, deleted: bool) -> list[dict[str, Any]]:
        entries = self._state["subjects"].get(subject, [])
        return [e for e in entries if deleted or not e["deleted"]]

    def _live_or_404(self, subject: str, deleted: bool = False) -> list[dict[str, Any]]:
        entries = self._entries(subject, deleted)
        if not entries:
            raise _subject_not_found(subject)
        return entries

    def _find(self, subject: str, version: str | int, deleted: bool) -> dict[str, Any]:
        number = _parse_version(version)
        entries = self._live_or_404(subject, deleted)
        if number is None:
            return entries[-1]
        for e in entries:
            if e["version"] == number:
                return e
        raise _version_not_found(subject, number)

    def _view(self, subject: str, entry: dict[str, Any]) -> dict[str, Any]:
        return {
            "subject": subject,
            "version": entry["version"],
            "id": entry["id"],
            "schema": self._state["schemas"][str(entry["id"])]["schema"],
        }

    def level(self, subject: str) -> str:
        """The compatibility level that applies to ``subject``."""
        with self._lock:
            level = self._state["subject_config"].get(subject)
            return str(level or self._state["config"]["compatibilityLevel"])

    def _problems(self, new: AvroSchema, against: Sequence[dict[str, Any]], level: str) -> list[str]:
        problems: list[str] = []
        for e in against:
            problems += [
                f"version {e['version']}: {p}" for p in compatibility_problems(new, self._schema(e["id"]), level)
            ]
        return problems

    def _against(self, subject: str, level: str) -> list[dict[str, Any]]:
        """The versions a new schema is checked against at ``level``."""
        live = self._entries(subject, deleted=False)
        if level == "NONE" or not live:
            return []
        return live if level.endswith("_TRANSITIVE") else live[-1:]

    # ------------------------------------------------------------------ reads
    def subjects(self, deleted: bool = False, prefix: str = "", deleted_only: bool = False) -> list[str]:
        with self._lock:
            out = []
            for subject, entries in self._state["subjects"].items():
                has_live = any(not e["deleted"] for e in entries)
                has_deleted = any(e["deleted"] for e in entries)
                keep = has_deleted if deleted_only else (has_live or (deleted and has_deleted))
                if keep and subject.startswith(prefix):
                    out.append(subject)
            return sorted(out)

    def versions(self, subject: str, deleted: bool = False, deleted_only: bool = False) -> list[int]:
        with self._lock:
            if deleted_only:
                entries = [e for e in self._entries(subject, True) if e["deleted"]]
                if not entries:
                    raise _subject_not_found(subject)
            else:
                entries = self._live_or_404(subject, deleted)
            return [e["version"] for e in entries]

    def get_version(self, subject: str, version: str | int, deleted: bool = False) -> dict[str, Any]:
        with self._lock:
            return self._view(subject, self._find(subject, version, deleted))

    def all_schemas(self, prefix: str = "", deleted: bool = False, latest_only: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            out = []
            for subject in sorted(self._state["subjects"]):
                if not subject.startswith(prefix):
                    continue
                entries = self._entries(subject, deleted)
                for e in entries[-1:] if latest_only else entries:
                    out.append(self._view(subject, e))
            return out

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        with self._lock:
            entry = self._state["schemas"].get(str(schema_id))
            if entry is None:
                raise _schema_not_found(str(schema_id))
            return {"schema": entry["schema"]}

    def id_usages(self, schema_id: int, deleted: bool = False) -> list[dict[str, Any]]:
        """``[{"subject": s, "version": v}]`` for every version registered with ``schema_id``."""
        with self._lock:
            if str(schema_id) not in self._state["schemas"]:
                raise _schema_not_found(str(schema_id))
            return [
                {"subject": subject, "version": e["version"]}
                for subject in sorted(self._state["subjects"])
                for e in self._entries(subject, deleted)
                if e["id"] == schema_id
            ]

    def lookup(self, subject: str, body: Any, deleted: bool = False) -> dict[str, Any]:
        new = schema_from_request(body)
        with self._lock:
            entries = self._live_or_404(subject, deleted)
            schema_id = self._by_canonical.get(new.canonical)
            for e in reversed(entries):
                if e["id"] == schema_id:
                    return self._view(subject, e)
            raise RegistryError(404, 40403, f"Schema not found: it is not registered under subject '{subject}'.")

    # ------------------------------------------------------------------ writes
    def register(self, subject: str, body: Any) -> int:
        """Register (or find) the request's schema under ``subject``; returns its id."""
        new = schema_from_request(body)
        with self._lock:
            known = self._by_canonical.get(new.canonical)
            if known is not None and any(e["id"] == known for e in self._entries(subject, deleted=False)):
                return known
            level = self.level(subject)
            problems = self._problems(new, self._against(subject, level), level)
            if problems:
                raise RegistryError(
                    409,
                    409,
                    f"Schema being registered is incompatible with an earlier schema for subject "
                    f"'{subject}' (compatibility {level}), details: {problems}",
                )
            with self._change() as state:
                if known is None:
                    schema_id = int(state["next_id"])
                    state["next_id"] = schema_id + 1
                    state["schemas"][str(schema_id)] = {"schema": new.text, "schemaType": "AVRO"}
                else:
                    schema_id = known
                entries = state["subjects"].setdefault(subject, [])
                version = max((e["version"] for e in entries), default=0) + 1
                entries.append({"version": version, "id": schema_id, "deleted": False})
            self._by_canonical.setdefault(new.canonical, schema_id)
            self._parsed.setdefault(schema_id, new)
        log.info("registered subject=%s version=%d id=%d", subject, version, schema_id)
        return schema_id

    def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        with self._lock:
            entries = self._entries(subject, deleted=True)
            if not entries:
                raise _subject_not_found(subject)
            live = [e["version"] for e in entries if not e["deleted"]]
            if permanent:
                if live:
                    raise RegistryError(
                        404,
                        40405,
                        f"Subject '{subject}' was not deleted first before being permanently "
                        "deleted; delete it without permanent=true first",
                    )
                with self._change() as state:
                    del state["subjects"][subject]
                    state["subject_config"].pop(subject, None)
                log.info("permanently deleted subject=%s", subject)
                return [e["version"] for e in entries]
            if not live:
                raise RegistryError(
                    404,
                    40404,
                    f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently",
                )
            with self._change() as state:
                for e in state["subjects"][subject]:
                    e["deleted"] = True
            log.info("soft-deleted subject=%s versions=%s", subject, live)
            return live

    def delete_version(self, subject: str, version: str | int, permanent: bool = False) -> int:
        number = _parse_version(version)
        with self._lock:
            entries = self._entries(subject, deleted=True)
            if not entries:
                raise _subject_not_found(subject)
            if number is None:
                candidates = entries if permanent else [e for e in entries if not e["deleted"]]
                if not candidates:
                    raise _version_not_found(subject, "latest")
                number = candidates[-1]["version"]
            entry = next((e for e in entries if e["version"] == number), None)
            if entry is None:
                raise _version_not_found(subject, number)
            if permanent and not entry["deleted"]:
                raise RegistryError(
                    404,
                    40407,
                    f"Subject '{subject}' Version {number} was not deleted first before being "
                    "permanently deleted; delete it without permanent=true first",
                )
            if not permanent and entry["deleted"]:
                raise RegistryError(
                    404,
                    40406,
                    f"Subject '{subject}' Version {number} was soft deleted. Set permanent=true to delete permanently",
                )
            with self._change() as state:
                kept = state["subjects"][subject]
                if permanent:
                    kept[:] = [e for e in kept if e["version"] != number]
                    if not kept:
                        del state["subjects"][subject]
                else:
                    for e in kept:
                        if e["version"] == number:
                            e["deleted"] = True
            log.info("deleted subject=%s version=%d permanent=%s", subject, number, permanent)
            return number

    # ------------------------------------------------------------------ config
    def get_config(self, subject: str | None = None, default_to_global: bool = False) -> str:
        with self._lock:
            if subject is None:
                return str(self._state["config"]["compatibilityLevel"])
            level = self._state["subject_config"].get(subject)
            if level is None:
                if default_to_global:
                    return str(self._state["config"]["compatibilityLevel"])
                raise RegistryError(
                    404,
                    40408,
                    f"Subject '{subject}' does not have subject-level compatibility configured",
                )
            return str(level)

    def set_config(self, subject: str | None, level: str) -> str:
        value = normalise_level(level)
        with self._change() as state:
            if subject is None:
                state["config"]["compatibilityLevel"] = value
            else:
                state["subject_config"][subject] = value
        log.info("compatibility subject=%s level=%s", subject or "(global)", value)
        return value

    def delete_config(self, subject: str | None = None) -> str:
        with self._lock:
            previous = self.get_config(subject)
            with self._change() as state:
                if subject is None:
                    state["config"]["compatibilityLevel"] = DEFAULT_COMPATIBILITY
                else:
                    del state["subject_config"][subject]
            return previous

    # ------------------------------------------------------------------ compatibility
    def test_compatibility(
        self, subject: str, body: Any, version: str | int | None = None, verbose: bool = False
    ) -> dict[str, Any]:
        """Whether the request's schema may follow ``version`` (all versions that its level
        checks when ``None``) of ``subject``."""
        new = schema_from_request(body)
        with self._lock:
            level = self.level(subject)
            if version is None:
                against = self._against(subject, level)
            elif _parse_version(version) is None and not self._entries(subject, deleted=False):
                against = []  # nothing registered yet: anything is compatible with "latest"
            else:
                against = [] if level == "NONE" else [self._find(subject, version, False)]
            problems = self._problems(new, against, level)
        result: dict[str, Any] = {"is_compatible": not problems}
        if verbose:
            result["messages"] = problems
        return result


# ------------------------------------------------------------------------------------- API


class RegistryResponse(JSONResponse):
    """JSON with Confluent's content type."""

    media_type = CONTENT_TYPE


def _store(request: Request) -> SchemaStore:
    return request.app.state.store  # type: ignore[no-any-return]


async def _json_body(request: Request) -> Any:
    """The JSON request body, whatever content type the client declared."""
    raw = await request.body()
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError as exc:
        raise RegistryError(400, 400, f"the request body is not valid JSON: {exc}") from exc


def _paginate(items: list[Any], offset: int, limit: int) -> list[Any]:
    start = max(offset, 0)
    return items[start:] if limit < 0 else items[start : start + limit]


def _raw_schema(text: str) -> Response:
    return Response(content=text, media_type=CONTENT_TYPE)


Store = Annotated[SchemaStore, Depends(_store)]
Body = Annotated[Any, Depends(_json_body)]
Deleted = Annotated[bool, Query(description="include soft-deleted subjects / versions")]
DeletedOnly = Annotated[bool, Query(alias="deletedOnly")]
Offset = Annotated[int, Query()]
Limit = Annotated[int, Query(description="page size; negative: no limit")]

schemas_api = APIRouter(tags=["schemas"])
subjects_api = APIRouter(tags=["subjects"])
config_api = APIRouter(tags=["config"])


@schemas_api.get("/schemas/types")
async def schema_types() -> list[str]:
    return list(SCHEMA_TYPES)


@schemas_api.get("/schemas")
async def list_schemas(
    store: Store,
    subject_prefix: Annotated[str, Query(alias="subjectPrefix")] = "",
    deleted: Deleted = False,
    latest_only: Annotated[bool, Query(alias="latestOnly")] = False,
    offset: Offset = 0,
    limit: Limit = -1,
) -> list[dict[str, Any]]:
    return _paginate(store.all_schemas(subject_prefix, deleted, latest_only), offset, limit)


@schemas_api.get("/schemas/ids/{schema_id}")
async def schema_by_id(store: Store, schema_id: int) -> dict[str, Any]:
    # ?subject= and ?format= are accepted and ignored: ids are global here (one context)
    return store.schema_by_id(schema_id)


@schemas_api.get("/schemas/ids/{schema_id}/schema")
async def raw_schema_by_id(store: Store, schema_id: int) -> Response:
    return _raw_schema(store.schema_by_id(schema_id)["schema"])


@schemas_api.get("/schemas/ids/{schema_id}/subjects")
async def subjects_of_id(
    store: Store,
    schema_id: int,
    subject: str | None = None,
    deleted: Deleted = False,
    offset: Offset = 0,
    limit: Limit = -1,
) -> list[str]:
    subjects = sorted({u["subject"] for u in store.id_usages(schema_id, deleted)})
    if subject is not None:
        subjects = [s for s in subjects if s == subject]
    return _paginate(subjects, offset, limit)


@schemas_api.get("/schemas/ids/{schema_id}/versions")
async def versions_of_id(
    store: Store,
    schema_id: int,
    subject: str | None = None,
    deleted: Deleted = False,
    offset: Offset = 0,
    limit: Limit = -1,
) -> list[dict[str, Any]]:
    usages = store.id_usages(schema_id, deleted)
    if subject is not None:
        usages = [u for u in usages if u["subject"] == subject]
    return _paginate(usages, offset, limit)


@subjects_api.get("/subjects")
async def list_subjects(
    store: Store,
    subject_prefix: Annotated[str, Query(alias="subjectPrefix")] = "",
    deleted: Deleted = False,
    deleted_only: DeletedOnly = False,
    offset: Offset = 0,
    limit: Limit = -1,
) -> list[str]:
    return _paginate(store.subjects(deleted, subject_prefix, deleted_only), offset, limit)


@subjects_api.get("/subjects/{subject}/versions")
async def list_versions(
    store: Store,
    subject: str,
    deleted: Deleted = False,
    deleted_only: DeletedOnly = False,
    offset: Offset = 0,
    limit: Limit = -1,
) -> list[int]:
    return _paginate(store.versions(subject, deleted, deleted_only), offset, limit)


@subjects_api.get("/subjects/{subject}/versions/{version}")
async def get_version(store: Store, subject: str, version: str, deleted: Deleted = False) -> dict[str, Any]:
    return store.get_version(subject, version, deleted)


@subjects_api.get("/subjects/{subject}/versions/{version}/schema")
async def get_version_schema(store: Store, subject: str, version: str, deleted: Deleted = False) -> Response:
    return _raw_schema(store.get_version(subject, version, deleted)["schema"])


@subjects_api.get("/subjects/{subject}/versions/{version}/referencedby")
async def referenced_by(store: Store, subject: str, version: str) -> list[int]:
    store.get_version(subject, version)  # 404s as Confluent does; references are not supported
    return []


@subjects_api.post("/subjects/{subject}/versions")
async def register(store: Store, subject: str, body: Body) -> dict[str, Any]:
    # ?normalize= is accepted: schemas are always compared by their normal form here
    return {"id": store.register(subject, body)}


@subjects_api.post("/subjects/{subject}")
async def lookup(store: Store, subject: str, body: Body, deleted: Deleted = False) -> dict[str, Any]:
    return store.lookup(subject, body, deleted)


@subjects_api.delete("/subjects/{subject}")
async def delete_subject(store: Store, subject: str, permanent: bool = False) -> list[int]:
    return store.delete_subject(subject, permanent)


@subjects_api.delete("/subjects/{subject}/versions/{version}")
async def delete_version(store: Store, subject: str, version: str, permanent: bool = False) -> int:
    return store.delete_version(subject, version, permanent)


@subjects_api.post("/compatibility/subjects/{subject}/versions/{version}")
async def check_against_version(
    store: Store, subject: str, version: str, body: Body, verbose: bool = False
) -> dict[str, Any]:
    return store.test_compatibility(subject, body, version, verbose)


@subjects_api.post("/compatibility/subjects/{subject}/versions")
async def check_against_all(store: Store, subject: str, body: Body, verbose: bool = False) -> dict[str, Any]:
    return store.test_compatibility(subject, body, None, verbose)


def _level_from_body(body: Any) -> str:
    if isinstance(body, dict):
        level = body.get("compatibility") or body.get("compatibilityLevel")
        if isinstance(level, str):
            return level
    raise RegistryError(
        422,
        42203,
        'Invalid compatibility level: send {"compatibility": "BACKWARD"} (or another '
        "level: " + ", ".join(COMPATIBILITY_LEVELS) + ")",
    )


@config_api.get("/config")
async def get_global_config(store: Store) -> dict[str, Any]:
    return {"compatibilityLevel": store.get_config()}


@config_api.put("/config")
async def put_global_config(store: Store, body: Body) -> dict[str, Any]:
    return {"compatibility": store.set_config(None, _level_from_body(body))}


@config_api.delete("/config")
async def delete_global_config(store: Store) -> dict[str, Any]:
    return {"compatibilityLevel": store.delete_config()}


@config_api.get("/config/{subject}")
async def get_subject_config(
    store: Store,
    subject: str,
    default_to_global: Annotated[bool, Query(alias="defaultToGlobal")] = False,
) -> dict[str, Any]:
    return {"compatibilityLevel": store.get_config(subject, default_to_global)}


@config_api.put("/config/{subject}")
async def put_subject_config(store: Store, subject: str, body: Body) -> dict[str, Any]:
    return {"compatibility": store.set_config(subject, _level_from_body(body))}


@config_api.delete("/config/{subject}")
async def delete_subject_config(store: Store, subject: str) -> dict[str, Any]:
    return {"compatibilityLevel": store.delete_config(subject)}


def _mode_from_body(body: Any) -> dict[str, str]:
    mode = body.get("mode") if isinstance(body, dict) else None
    if str(mode).upper() != "READWRITE":
        raise RegistryError(422, 42204, f"Invalid mode '{mode}': racewire's registry only runs in READWRITE mode")
    return {"mode": "READWRITE"}


@config_api.get("/mode")
@config_api.get("/mode/{subject}")
async def get_mode(subject: str | None = None) -> dict[str, str]:
    return {"mode": "READWRITE"}


@config_api.put("/mode")
@config_api.put("/mode/{subject}")
async def put_mode(body: Body, subject: str | None = None) -> dict[str, str]:
    return _mode_from_body(body)


@config_api.get("/contexts")
async def contexts() -> list[str]:
    return ["."]


@config_api.get("/")
async def root() -> dict[str, Any]:
    return {}


def _error(status: int, error_code: int, message: str) -> RegistryResponse:
    return RegistryResponse({"error_code": error_code, "message": message}, status_code=status)


async def _registry_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    return _error(exc.status, exc.error_code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return _error(exc.status_code, exc.status_code, f"HTTP {exc.status_code}: {exc.detail}")


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
    return _error(422, 422, f"Invalid request: {details}")


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("registry request %s %s failed", request.method, request.url.path)
    return _error(500, 50000, f"Internal error: {exc!r}")


def create_app(data_dir: Path) -> FastAPI:
    """The registry's ASGI app, keeping its state under ``data_dir/registry``."""
    app = FastAPI(
        title="racewire schema registry",
        summary="Confluent Schema Registry compatible REST API (Avro)",
        version="1",
        default_response_class=RegistryResponse,
    )
    app.state.store = SchemaStore(Path(data_dir) / "registry")
    for router in (schemas_api, subjects_api, config_api):
        app.include_router(router)
    app.add_exception_handler(RegistryError, _registry_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    return app


# ---------------------------------------------------------------------------------- server


class _DirLock:
    """An exclusive ``flock`` on ``registry.lock``, so two registries never share a state file."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RegistryDataError(
                f"another schema registry (pid {holder}) uses {self.path.parent}; stop it, or "
                "give this one another --data-dir"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ValueError(f"cannot listen on host {host!r}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(host, port) from exc
        raise
    return sock


class RegistryServer:
    """The registry served by uvicorn in a background thread.

    ``port=0`` picks a free port; :attr:`url` says which. ``start()`` returns once the server
    answers HTTP; ``stop()`` shuts it down and frees the port and the data directory.
    """

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._lock = _DirLock(self.data_dir / "registry")
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app: FastAPI | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the registry server is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, with a loopback address when listening on all interfaces."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def store(self) -> SchemaStore:
        if self.app is None:
            raise RuntimeError("the registry server is not started")
        return self.app.state.store  # type: ignore[no-any-return]

    def start(self, timeout: float = 15.0) -> Self:
        """Take the data directory, bind the port, serve, and wait until it answers."""
        if self.running:
            return self
        self._lock.acquire()
        try:
            self.app = create_app(self.data_dir)
            self._socket = _bind(self.host, self._requested_port)
            self._port = int(self._socket.getsockname()[1])
            config = uvicorn.Config(
                self.app,
                log_level="warning",
                access_log=False,
                lifespan="off",
                log_config=None,
                timeout_graceful_shutdown=5,
            )
            self._server = uvicorn.Server(config)
            self._thread = threading.Thread(
                target=self._server.run,
                kwargs={"sockets": [self._socket]},
                name=f"racewire-registry-{self._port}",
                daemon=True,
            )
            self._thread.start()
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("schema registry listening on %s, state in %s", self.url, self.store.path)
        return self

    def _wait_ready(self, timeout: float) -> None:
        host = self.url.removeprefix("http://").rpartition(":")[0].strip("[]")
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError("the schema registry server exited during start-up")
            conn = http.client.HTTPConnection(host, self.port, timeout=1.0)
            try:
                conn.request("GET", "/")
                if conn.getresponse().status == 200:
                    return
            except (OSError, http.client.HTTPException) as exc:
                last = exc
            finally:
                conn.close()
            time.sleep(0.02)
        raise TimeoutError(f"the schema registry did not answer on {self.url} in {timeout:g} s: {last!r}")

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down; safe to call more than once."""
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout)
            if thread.is_alive():
                server.force_exit = True
                thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        self._lock.release()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1; 0.0.0.0 for all)"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port (default: RACEWIRE_REGISTRY_PORT, 18081; 0: any free port)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="state goes to DATA_DIR/registry (default: RACEWIRE_DATA_DIR, .racewire)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve in the foreground until SIGINT or SIGTERM; 2 when it cannot start."""
    from pydantic import ValidationError

    from config.settings import load_settings

    try:
        settings = load_settings(data_dir=args.data_dir)
    except ValidationError as exc:
        print(f"racewire registry: invalid settings: {exc}", file=sys.stderr)
        return 2
    port = settings.registry_port if args.port is None else args.port
    if not 0 <= port <= 65535:
        print(f"racewire registry: --port {port} is not a TCP port (0-65535)", file=sys.stderr)
        return 2
    server = RegistryServer(settings.data_dir, host=args.host, port=port)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start()
        except (OSError, RuntimeError, ValueError) as exc:  # port taken, data dir unusable, bad host
            print(f"racewire registry: cannot start: {exc}", file=sys.stderr)
            return 2
        print(f"schema registry listening on {server.url} (state: {server.store.path})", flush=True)
        while not stop.wait(0.5):
            if not server.running:
                log.error("the schema registry server stopped unexpectedly")
                return 1
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
