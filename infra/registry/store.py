"""Subjects, versions and schema ids with Confluent's semantics, kept in one JSON file.

State is ``<directory>/registry.json``, replaced atomically (temporary file, ``fsync``,
``os.replace``) on every change, so ids and versions survive restarts; :class:`DataDirLock` (a lock
file) keeps two registries from sharing a data directory.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from infra.registry.compat import (
    DEFAULT_COMPATIBILITY,
    AvroSchema,
    compatibility_problems,
    normalise_level,
    parse_avro,
)
from infra.registry.errors import InvalidSchemaError, RegistryDataError, RegistryError

log = logging.getLogger(__name__)

SCHEMA_TYPES = ("AVRO",)
STATE_FILE = "registry.json"
LOCK_FILE = "registry.lock"
_STATE_FORMAT = 1
_MAX_VERSION = 2**31 - 1


def _subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def _version_not_found(subject: str, version: int | str) -> RegistryError:
    return RegistryError(404, 40402, f"Version {version} not found for subject '{subject}'.")


def _schema_not_found(what: str) -> RegistryError:
    return RegistryError(404, 40403, f"Schema {what} not found.")


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


class DataDirLock:
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
