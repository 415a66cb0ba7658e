"""Read side of the Redis layout that the race dataflow writes (:mod:`schemas.redis_layout`).

Serving never writes these keys.

Stream entry ids (``<ms>-<seq>``) are compared as integer pairs through :class:`StreamId`.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from schemas.redis_layout import (
    COMMENTARY_TYPE,
    EVENT_JSON_FIELD,
    EVENT_TYPE_FIELD,
    RACES_KEY,
    events_key,
    session_key,
    state_key,
    stints_key,
    strategy_key,
    version_key,
)

#: how many known race ids a 404 message lists
KNOWN_IN_MESSAGE = 20

_STREAM_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")
STREAM_ID_PATTERN = r"^\d{1,20}-\d{1,20}$"
STREAM_ID_MAX = 2**64 - 1


class StreamId(NamedTuple):
    """A Redis stream entry id, ordered like Redis orders them.

    >>> StreamId.parse("1700000000000-2") > StreamId.parse("1700000000000-10")
    False
    >>> str(StreamId(5, 0))
    '5-0'
    """

    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str | bytes) -> StreamId:
        if isinstance(text, bytes):
            text = text.decode("ascii", "replace")
        m = _STREAM_ID.match(text)
        if m is None:
            raise ValueError(f"not a Redis stream id (expected '<ms>-<seq>', e.g. '1700000000000-0'): {text!r}")
        ms, seq = int(m.group(1)), int(m.group(2))
        if ms > STREAM_ID_MAX or seq > STREAM_ID_MAX:  # Redis ids are two unsigned 64-bit integers
            raise ValueError(f"stream id {text!r} is out of range: each part is at most {STREAM_ID_MAX}")
        return cls(ms, seq)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


ZERO = StreamId(0, 0)


@dataclass(slots=True, frozen=True)
class StreamEntry:
    """One entry of ``race:{id}:events`` (:func:`~schemas.redis_layout.events_key`): a race event or a
    commentary line."""

    id: StreamId
    type: str
    json: bytes  # RaceEvent.to_dict() / Commentary.to_dict() as JSON, passed through untouched

    @property
    def kind(self) -> str:
        """SSE event name: ``commentary`` for commentary lines, ``event`` for everything else."""
        return "commentary" if self.type == COMMENTARY_TYPE else "event"

    def to_api(self) -> dict[str, Any]:
        return {"id": str(self.id), "type": self.type, "kind": self.kind, "data": orjson.loads(self.json)}

    @classmethod
    def from_redis(cls, entry_id: bytes, fields: dict[bytes, bytes]) -> StreamEntry:
        return cls(StreamId.parse(entry_id), fields.get(EVENT_TYPE_FIELD, b"").decode("utf-8", "replace"),
                   fields.get(EVENT_JSON_FIELD, b"null"))


class RaceNotFound(LookupError):
    def __init__(self, race_id: str, known: list[str]) -> None:
        shown = ", ".join(known[:KNOWN_IN_MESSAGE]) or "none"
        more = f" (and {len(known) - KNOWN_IN_MESSAGE} more)" if len(known) > KNOWN_IN_MESSAGE else ""
        super().__init__(f"race {race_id!r} not found; known races: {shown}{more}")
        self.race_id = race_id


#: where the current request's live reads were answered from: "redis" or "postgresql" (see :mod:`serving.fallback`)
SOURCE: ContextVar[str] = ContextVar("racewire_source", default="redis")
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
#: while Redis is down, at most one read per this many seconds tries it again
PROBE_INTERVAL_S = 1.0

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _falls_back(empty: Callable[[Any], bool] | None = None
                ) -> Callable[[Callable[Concatenate[RaceStore, _P], Awaitable[_T]]],
                              Callable[Concatenate[RaceStore, _P], Awaitable[_T]]]:
    """A read that, when Redis is unreachable and the store has a ``fallback``, asks the fallback's
    method of the same name instead (and keeps doing so, without trying Redis, for ``probe_s``).

    With ``empty``, a race-scoped read (race id first) whose Redis answer is ``empty`` also asks the
    fallback when Redis, although up, holds nothing of that race while the history store has it
    (Redis lost it: a flush, a restart without persistence; the dataflow writes live races back,
    finished ones stay in PostgreSQL)."""

    def decorate(fn: Callable[Concatenate[RaceStore, _P], Awaitable[_T]]
                 ) -> Callable[Concatenate[RaceStore, _P], Awaitable[_T]]:
        name = fn.__name__

        @functools.wraps(fn)
        async def read(self: RaceStore, *args: _P.args, **kwargs: _P.kwargs) -> _T:
            fallback = self.fallback
            if fallback is not None and time.monotonic() < self._redis_down_until:
                SOURCE.set("postgresql")
                return await getattr(fallback, name)(*args, **kwargs)  # type: ignore[no-any-return]
            try:
                result = await fn(self, *args, **kwargs)
            except REDIS_DOWN as e:
                if fallback is None:
                    raise
                self._redis_down_until = time.monotonic() + self.probe_s
                fallback.redis_error = e
                SOURCE.set("postgresql")
                return await getattr(fallback, name)(*args, **kwargs)  # type: ignore[no-any-return]
            if empty is not None and empty(result) and args and await self.lost_race(str(args[0])):
                SOURCE.set("postgresql")
                return await getattr(fallback, name)(*args, **kwargs)  # type: ignore[no-any-return]
            SOURCE.set("redis")
            return result

        return read

    return decorate


def _nothing(result: Any) -> bool:
    return not result


class RaceStore:
    """Typed reads of the live race state; every method is one or two Redis round trips.

    With a ``fallback`` (:class:`serving.fallback.PgFallback`), the reads that the race routes use
    answer from PostgreSQL while Redis is unreachable; :data:`SOURCE` tells which store answered."""

    def __init__(self, client: aioredis.Redis, fallback: Any = None, probe_s: float = PROBE_INTERVAL_S) -> None:
        # typed loosely: redis-py's annotations cover both str and bytes replies; this client returns bytes
        self.client: Any = client
        self.fallback: Any = fallback
        self.probe_s = probe_s
        self._redis_down_until = 0.0

    def _history(self) -> Any:
        """The fallback when it has a history store to read (else None)."""
        fallback = self.fallback
        return fallback if fallback is not None and getattr(fallback, "configured", False) else None

    async def lost_race(self, race_id: str) -> bool:
        """True when Redis (up) holds nothing of ``race_id`` but the history store has it."""
        history = self._history()
        if history is None:
            return False
        pipe = self.client.pipeline(transaction=False)
        pipe.hexists(RACES_KEY, race_id)
        pipe.exists(state_key(race_id), session_key(race_id), events_key(race_id))
        listed, exists = await pipe.execute()
        return not listed and not exists and bool(await history.has_race(race_id))

    @_falls_back()
    async def race_ids(self) -> list[str]:
        keys = await self.client.hkeys(RACES_KEY)
        ids = {k.decode() if isinstance(k, bytes) else str(k) for k in keys}
        history = self._history()
        if history is not None:  # races Redis no longer holds (finished, then lost) are still known
            ids.update(await history.known_race_ids())
        return sorted(ids)

    @_falls_back()
    async def races(self) -> list[dict[str, Any]]:
        raw = await self.client.hgetall(RACES_KEY)
        out = []
        for key, value in raw.items():
            try:
                summary = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(summary, dict):
                summary.setdefault("race_id", key.decode() if isinstance(key, bytes) else str(key))
                out.append(summary)
        history = self._history()
        if history is not None:  # races Redis no longer holds (finished, then lost), from PostgreSQL
            known = {str(s.get("race_id")) for s in out}
            out += [s for s in await history.known_races() if s.get("race_id") not in known]
        return sorted(out, key=lambda s: str(s.get("race_id")))

    @_falls_back()
    async def require(self, race_id: str) -> None:
        """Raise :class:`RaceNotFound` unless the race has a summary or a state in Redis, or (Redis
        lost it) is in the history store."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hexists(RACES_KEY, race_id)
        pipe.exists(state_key(race_id), session_key(race_id))
        listed, exists = await pipe.execute()
        if not listed and not exists:
            history = self._history()
            if history is not None and await history.has_race(race_id):
                return  # the reads that follow answer from the history store
            raise RaceNotFound(race_id, await self.race_ids())

    @_falls_back(empty=_nothing)
    async def state_raw(self, race_id: str) -> bytes | None:
        """The leaderboard document exactly as stored (JSON bytes), or None before the first snapshot."""
        value = await self.client.get(state_key(race_id))
        return None if value is None else bytes(value)

    async def version(self, race_id: str) -> int:
        value = await self.client.get(version_key(race_id))
        try:
            return int(value) if value is not None else -1
        except ValueError:
            return -1

    async def state(self, race_id: str) -> dict[str, Any] | None:
        raw = await self.state_raw(race_id)
        return None if raw is None else orjson.loads(raw)

    @_falls_back(empty=_nothing)
    async def session(self, race_id: str) -> dict[str, Any] | None:
        raw = await self.client.get(session_key(race_id))
        return None if raw is None else orjson.loads(raw)

    async def _json_hash(self, key: str) -> dict[str, dict[str, Any]]:
        raw = await self.client.hgetall(key)
        out = {}
        for field, value in raw.items():
            try:
                out[field.decode() if isinstance(field, bytes) else str(field)] = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
        return out

    async def strategy_calls(self, race_id: str) -> list[dict[str, Any]]:
        """Each car's latest strategy call (``race:{id}:strategy``)."""
        return list((await self._json_hash(strategy_key(race_id))).values())

    async def stints(self, race_id: str) -> dict[str, dict[str, Any]]:
        """Every stint's latest features, by ``driver:stint`` (``race:{id}:stints``)."""
        return await self._json_hash(stints_key(race_id))

    async def last_event_id(self, race_id: str) -> StreamId:
        entries = await self.client.xrevrange(events_key(race_id), "+", "-", count=1)
        return StreamId.parse(entries[0][0]) if entries else ZERO

    @_falls_back(empty=_nothing)
    async def events_after(self, race_id: str, after: StreamId, limit: int) -> list[StreamEntry]:
        """Entries strictly after ``after``, oldest first, at most ``limit``."""
        raw = await self.client.xrange(events_key(race_id), f"({after}", "+", count=limit)
        return [StreamEntry.from_redis(i, f) for i, f in raw]

    @_falls_back(empty=_nothing)
    async def latest_events(self, race_id: str, limit: int) -> list[StreamEntry]:
        """The newest ``limit`` entries, oldest first."""
        raw = await self.client.xrevrange(events_key(race_id), "+", "-", count=limit)
        return [StreamEntry.from_redis(i, f) for i, f in reversed(raw)]

    async def trimmed_after(self, race_id: str, cursor: StreamId) -> StreamId | None:
        """If the capped stream no longer holds what followed ``cursor`` (its oldest entry is newer than
        the cursor), the oldest entry id still there (``0-0`` when it is empty); else None. The entry
        at the cursor itself may have been the only one trimmed: then nothing was missed, but it
        cannot be told apart, so the caller reports a possible gap."""
        if cursor == ZERO:
            return None
        try:
            info = await self.client.xinfo_stream(events_key(race_id))
        except aioredis.ResponseError:  # no such stream
            return None
        first = info.get("first-entry") or info.get(b"first-entry")
        if first:
            oldest = StreamId.parse(first[0])
            return oldest if oldest > cursor else None
        last = info.get("last-generated-id") or info.get(b"last-generated-id")
        return ZERO if last and StreamId.parse(last) > cursor else None

def drivers_from_state(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Driver list derived from leaderboard rows, for races whose session document is not in Redis."""
    rows = sorted(state.get("rows") or [], key=lambda r: r.get("driver_number", 0))
    return [{"number": r.get("driver_number"), "code": r.get("code"), "name": r.get("code"),
             "team": r.get("team"), "team_colour": r.get("team_colour")} for r in rows]
