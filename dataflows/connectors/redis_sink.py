"""Redis edge: live state for serving, written idempotently; outages ridden out, data loss healed.

The keys and documents written here are the Redis layout of :mod:`schemas.redis_layout` (its
docstring is the table). Per race, the state only moves forward: a state write with a version
not above the stored one is ignored, so replays and duplicate deliveries cannot move it back; the
events index makes each event added exactly once whatever is replayed, under the same stream id
when the stream has to be written again after a data loss; stints and strategy calls only move
forward too (a write older than the stored value, an earlier lap or an open version of a stint
already closed, is ignored). The data-loss token (:data:`~schemas.redis_layout.SENTINEL_KEY`)
tells a writer that Redis has lost data since it last wrote (see :class:`RedisWriter`).
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from redis.backoff import NoBackoff
from redis.retry import Retry

from dataflows.connectors.retry import OutageRetry, RetryPolicy
from dataflows.outputs import LapChart
from schemas.model import Commentary, Leaderboard, RaceEvent, Recommendation, Stint
from schemas.redis_layout import (
    COMMENTARY_TYPE,
    EVENT_ID_FIELD,
    EVENT_JSON_FIELD,
    EVENT_TYPE_FIELD,
    EVENTS_MAXLEN,
    RACES_KEY,
    SENTINEL_KEY,
    UPDATES_MAXLEN,
    BoardUpdate,
    SessionDoc,
    event_index_key,
    events_key,
    lapchart_key,
    leaderboard_document,
    leaderboard_key,
    order_key,
    race_summary,
    session_document,
    session_key,
    state_key,
    stints_key,
    strategy_history_key,
    strategy_key,
    summary_of_state,
    updates_key,
    version_key,
)

# The scripts spell the stream fields of schemas.redis_layout (EVENT_FIELDS, UPDATE_VERSION_FIELD);
# tests/unit/test_redis_layout.py checks they agree.

# KEYS: state, version, board, updates, races ; ARGV: version, json, race_id, summary, maxlen, zadd...
_PUT_STATE = """
local cur = tonumber(redis.call('GET', KEYS[2]) or '-1')
local v = tonumber(ARGV[1])
if v <= cur then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[5], ARGV[3], ARGV[4])
redis.call('DEL', KEYS[3])
if #ARGV > 5 then redis.call('ZADD', KEYS[3], unpack(ARGV, 6)) end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'version', ARGV[1])
return 1
"""

# KEYS: events, event index, sentinel ; ARGV: token, maxlen, then triples event_id, type, json.
# Adds each event not in the index; returns the stream id of every event given (new or not), or
# nil, adding nothing, when the sentinel does not hold the writer's token (Redis lost data).
_ADD_EVENTS = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return nil end
local ids = {}
for i = 3, #ARGV, 3 do
  local id = redis.call('HGET', KEYS[2], ARGV[i])
  if not id then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
                    'event_id', ARGV[i], 'type', ARGV[i + 1], 'json', ARGV[i + 2])
    redis.call('HSET', KEYS[2], ARGV[i], id)
  end
  ids[#ids + 1] = id
end
return ids
"""

# KEYS: events, event index ; ARGV: maxlen, then quads stream id ('*' for none yet), event_id, type,
# json, in stream order. Writes the stream and its index again from scratch, each event under its
# original id (a new one only where that is impossible); returns the ids used.
_REWRITE_EVENTS = """
redis.call('DEL', KEYS[1], KEYS[2])
local ids = {}
for i = 2, #ARGV, 4 do
  local id = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[i],
                         'event_id', ARGV[i + 1], 'type', ARGV[i + 2], 'json', ARGV[i + 3])
  if type(id) == 'table' and id.err then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                    'event_id', ARGV[i + 1], 'type', ARGV[i + 2], 'json', ARGV[i + 3])
  end
  redis.call('HSET', KEYS[2], ARGV[i + 1], id)
  ids[#ids + 1] = id
end
return ids
"""

# KEYS: hash, its order hash ; ARGV: triples field, order, json. Keeps the value with the highest order.
_PUT_NEWER = """
for i = 1, #ARGV, 3 do
  local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) >= cur then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
return 0
"""

# KEYS: sentinel ; ARGV: a fresh token. The token in Redis, set to the fresh one if there is none.
_TAKE_TOKEN = """
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""

#: errors that mean Redis is unreachable or not serving yet (refused or broken connection, timeout, a
#: restarting server loading its data, a replica that became read-only, a script cache emptied by a
#: restart between loading and running): the write is retried (see :mod:`dataflows.connectors.retry`)
TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ReadOnlyError,
             redis.exceptions.TryAgainError, redis.exceptions.NoScriptError, redis.exceptions.ClusterDownError,
             redis.exceptions.OutOfMemoryError)
#: ... except these, which no wait will fix
PERMANENT = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)
#: a race not written for this long is dropped from the writer's memory (read back from Redis if it returns)
IDLE_RACE_S = 3600.0
#: the writer's connection: seconds to connect, and to wait for a reply
CONNECT_TIMEOUT_S = 5.0
SOCKET_TIMEOUT_S = 10.0
#: rounds of "Redis lost its data: rewrite, write again" within one write before giving up
MAX_LOSS_ROUNDS = 5

#: loads a race's outputs from the history store (events, stints, lap charts), for what Redis lacks
HistoryLoader = Callable[[str], list[Any]]

log = logging.getLogger("racewire.flow.redis")


def _race_of(item: Any) -> str | None:
    if isinstance(item, BoardUpdate):
        return item.board.race_id
    if isinstance(item, SessionDoc):
        return item.session.race_id
    if isinstance(item, (LapChart, Stint, Recommendation, RaceEvent, Commentary, Leaderboard)):
        return item.race_id
    return None


class _RaceData:
    """What one race's keys hold, as written: one batch's worth, or (in :attr:`RedisWriter.mirror`)
    everything the writer wrote for a live race, merged. Values are the stored bytes."""

    __slots__ = ("board", "chart", "events", "final", "history", "newer", "session", "state", "touched", "trimmed")

    def __init__(self) -> None:
        self.board: BoardUpdate | None = None  # the newest snapshot added, not rendered yet
        self.session: bytes | None = None
        self.chart: dict[int, bytes] = {}
        #: key (of a race id) → field → (order, json): keeps the highest order (stints, strategy)
        self.newer: dict[Callable[[str], str], dict[str, tuple[int, bytes]]] = {}
        self.history: dict[str, bytes] = {}
        #: event id → [stream id (None until Redis gave one), type, json], in stream order
        self.events: dict[str, list[Any]] = {}
        #: event id → stream id of events older than the stream's cap (payload no longer kept)
        self.trimmed: dict[str, bytes] = {}
        #: (version, state document, races-hash summary, leaderboard ZADD arguments)
        self.state: tuple[int, bytes, bytes, list[Any]] | None = None
        self.final = False
        self.touched = time.monotonic()

    def add(self, item: Any) -> None:
        """Take one race-flow output (the newest of its kind wins, as in Redis)."""
        if isinstance(item, LapChart):
            self.chart[item.lap] = orjson.dumps(item.order)
        elif isinstance(item, Stint):
            self._newer(stints_key, f"{item.driver_number}:{item.stint}", 2 * item.end_lap + (not item.open),
                        orjson.dumps(item.to_dict()))
        elif isinstance(item, Recommendation):
            doc = orjson.dumps(item.to_dict())
            self.history[f"{item.lap}:{item.driver_number}"] = doc
            self._newer(strategy_key, str(item.driver_number), item.lap, doc)
        elif isinstance(item, (RaceEvent, Commentary)):
            kind = COMMENTARY_TYPE if isinstance(item, Commentary) else str(item.type)
            if item.event_id not in self.events:
                self.events[item.event_id] = [None, kind, orjson.dumps(item.to_dict())]
        elif isinstance(item, SessionDoc):
            self.session = orjson.dumps(session_document(item.session))
        elif isinstance(item, (BoardUpdate, Leaderboard)):
            update = item if isinstance(item, BoardUpdate) else BoardUpdate(item, None, None)
            if self.board is None or update.board.version > self.board.board.version:
                self.board = update

    def seal(self) -> _RaceData:
        """Render the newest snapshot taken by :meth:`add` (only that one: a batch may hold many)."""
        update, self.board = self.board, None
        if update is not None and (self.state is None or update.board.version > self.state[0]):
            board = update.board
            zargs: list[Any] = []
            for row in board.rows:
                zargs += [row.position, row.driver_number]
            self.state = (board.version, orjson.dumps(leaderboard_document(board, update.positions)),
                          orjson.dumps(race_summary(board, update.name)), zargs)
            self.final = board.final
        return self

    def _newer(self, key: Callable[[str], str], field: str, order: int, doc: bytes) -> None:
        fields = self.newer.setdefault(key, {})
        if field not in fields or order >= fields[field][0]:
            fields[field] = (order, doc)

    def merge(self, batch: _RaceData) -> None:
        """Fold a batch into this (mirror) copy. What is kept is copied into right-sized bytes:
        orjson's output holds a buffer of about 4 KB however short the JSON."""
        if batch.session is not None:
            self.session = _compact(batch.session)
        self.chart.update((lap, _compact(order)) for lap, order in batch.chart.items())
        for key, fields in batch.newer.items():
            for field, (order, doc) in fields.items():
                self._newer(key, field, order, _compact(doc))
        self.history.update((key, _compact(doc)) for key, doc in batch.history.items())
        for event_id, (stream_id, kind, doc) in batch.events.items():
            if event_id not in self.events and event_id not in self.trimmed:
                self.events[event_id] = [stream_id, kind, _compact(doc)]
        if batch.state is not None and (self.state is None or batch.state[0] > self.state[0]):
            version, doc, summary, zargs = batch.state
            self.state, self.final = (version, _compact(doc), _compact(summary), zargs), batch.final
        self.touched = time.monotonic()

    def cap(self, maxlen: int) -> None:
        """Keep the payloads of the newest ``maxlen`` events only (the stream holds no more)."""
        extra = len(self.events) - maxlen
        if extra <= 0:
            return
        for event_id in list(itertools.islice(self.events, extra)):
            stream_id = self.events[event_id][0]
            if stream_id is None:
                break  # not in Redis yet: keep it
            self.trimmed[event_id] = stream_id
            del self.events[event_id]

    @property
    def empty(self) -> bool:
        return not (self.session or self.chart or self.newer or self.history or self.events or self.state)


def _compact(data: bytes) -> bytes:
    """A right-sized copy of ``data``."""
    return memoryview(data).tobytes()


class RedisWriter:
    """Writes outputs to Redis (idempotent), rides out outages and heals data loss. Usable outside
    Bytewax (tools, tests).

    **Outages.** A write that fails because Redis is unreachable is retried with backoff until it
    succeeds (:class:`~dataflows.connectors.retry.OutageRetry`): the worker waits, nothing is lost,
    and every command is idempotent, so repeating a half-applied write is harmless.

    **Data loss** (``FLUSHALL``, a restart without persistence). The writer keeps, per live race,
    what it wrote (:attr:`mirror`): the state, the session, the lap chart, stints, strategy calls
    and their history, and every event with the stream id Redis gave it (the newest
    ``events_maxlen`` with their payloads, older ones by id only). Each write reads the token in
    :data:`~schemas.redis_layout.SENTINEL_KEY` in the same round trip, and the events script adds nothing unless the
    token is the one this writer holds, so no event lands in a flushed stream ahead of the old
    ones. On a mismatch the writer takes the new token (or sets one), rewrites every live race it
    holds whole (each event under its *original* stream id, in order, so SSE readers and clients
    resuming with ``Last-Event-ID`` skip what they already had), then writes the batch again. Each
    writer (one per worker) rewrites the races it owns: all of a race's outputs pass through the
    worker that owns the race key.

    The mirror is bounded: a race leaves it once its final state is written (its history is in
    PostgreSQL, which serving answers from while a race is missing from Redis), or after
    :data:`IDLE_RACE_S` without writes. A race first seen by this writer (e.g. after a flow
    restart) is read back from Redis; when Redis holds nothing of it (it lost the race while the
    flow was down), what ``history`` (PostgreSQL) has — events, stints, the lap chart — is loaded
    and written back.
    """

    def __init__(self, url: str, events_maxlen: int = EVENTS_MAXLEN, updates_maxlen: int = UPDATES_MAXLEN,
                 retry: RetryPolicy | None = None, history: HistoryLoader | None = None) -> None:
        self.client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                           socket_timeout=SOCKET_TIMEOUT_S, retry=Retry(NoBackoff(), 0))
        self._put_state = self.client.register_script(_PUT_STATE)
        self._add_events = self.client.register_script(_ADD_EVENTS)
        self._rewrite_events = self.client.register_script(_REWRITE_EVENTS)
        self._put_newer = self.client.register_script(_PUT_NEWER)
        self._take_token = self.client.register_script(_TAKE_TOKEN)
        self.events_maxlen = events_maxlen
        self.updates_maxlen = updates_maxlen
        self.retry = OutageRetry("redis", TRANSIENT, retry, permanent=PERMANENT)
        self.history = history
        #: live races written by this writer: what their keys hold
        self.mirror: dict[str, _RaceData] = {}
        #: races whose final state went out: written through, not kept
        self.finished: set[str] = set()
        #: the data-loss token this writer last saw in Redis (None before its first write)
        self.token: bytes | None = None
        self.rewrites = 0  # times this writer found that Redis had lost its data
        self._rewrite_pending = False
        self._idle_check = time.monotonic()

    def write(self, items: list[Any]) -> None:
        batch: dict[str, _RaceData] = {}
        for item in items:
            race_id = _race_of(item)
            if race_id is not None:
                data = batch.get(race_id)
                if data is None:
                    data = batch[race_id] = _RaceData()
                data.add(item)
        if not batch:
            return
        for data in batch.values():
            data.seal()
        self.retry.call(lambda: self._write(batch))
        for race_id, data in batch.items():
            if data.final:  # its history is in PostgreSQL; Redis keeps it until it loses it
                self.finished.add(race_id)
                self.mirror.pop(race_id, None)
        now = time.monotonic()
        if now - self._idle_check > 60:
            self._idle_check = now
            for race_id in [r for r, m in self.mirror.items() if now - m.touched > IDLE_RACE_S]:
                del self.mirror[race_id]

    # ------------------------------------------------------------------ one attempt
    def _write(self, batch: dict[str, _RaceData]) -> None:
        """One attempt; retried whole while Redis is unreachable (every step is idempotent)."""
        if self.token is None:
            self.token = self._take_token(keys=[SENTINEL_KEY], args=[uuid.uuid4().hex])
        if self._rewrite_pending:
            self._rewrite_all()
        for race_id, data in batch.items():
            if race_id not in self.finished:
                if race_id not in self.mirror:
                    self._load(race_id)
                self.mirror[race_id].merge(data)
        for _round in range(MAX_LOSS_ROUNDS):
            if self._write_once(batch):
                return
            self._lost()
        raise RuntimeError(f"Redis lost its data {MAX_LOSS_ROUNDS} times during one write: is something flushing "
                           f"it, or deleting {SENTINEL_KEY}?")

    def _write_once(self, batch: dict[str, _RaceData]) -> bool:
        """The batch in one pipeline; False, with no event added, when Redis has lost data since
        this writer took its token."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(SENTINEL_KEY)
        calls: list[tuple[int, str, list[str]]] = []
        for race_id, data in batch.items():
            if data.events:
                calls.append((len(pipe), race_id, list(data.events)))
            self._commands(pipe, race_id, data)
        results = pipe.execute()
        if results[0] != self.token or any(results[i] is None for i, _r, _e in calls):
            return False
        for i, race_id, event_ids in calls:
            mirror = self.mirror.get(race_id)
            if mirror is not None:
                for event_id, stream_id in zip(event_ids, results[i], strict=True):
                    entry = mirror.events.get(event_id)
                    if entry is not None:
                        entry[0] = stream_id
                mirror.cap(self.events_maxlen)
        return True

    def _commands(self, pipe: Any, race_id: str, data: _RaceData) -> None:
        """Queue a batch's writes for one race (the events script first, see :meth:`_write_once`)."""
        if data.events:
            args: list[Any] = [self.token, self.events_maxlen]
            for event_id, (_id, kind, doc) in data.events.items():
                args += [event_id, kind, doc]
            self._add_events(keys=[events_key(race_id), event_index_key(race_id), SENTINEL_KEY],
                             args=args, client=pipe)
        self._content(pipe, race_id, data)

    def _content(self, pipe: Any, race_id: str, data: _RaceData) -> None:
        """Queue the writes of everything but the events (all idempotent, all version- or order-guarded)."""
        if data.session is not None:
            pipe.set(session_key(race_id), data.session)
        if data.chart:
            pipe.hset(lapchart_key(race_id), mapping=data.chart)  # type: ignore[arg-type]
        for key_of, fields in data.newer.items():
            key = key_of(race_id)
            triples: list[Any] = []
            for field, (order, doc) in fields.items():
                triples += [field, order, doc]
            self._put_newer(keys=[key, order_key(key)], args=triples, client=pipe)
        if data.history:
            pipe.hset(strategy_history_key(race_id), mapping=data.history)  # type: ignore[arg-type]
        if data.state is not None:
            version, doc, summary, zargs = data.state
            self._put_state(keys=[state_key(race_id), version_key(race_id), leaderboard_key(race_id),
                                  updates_key(race_id), RACES_KEY],
                            args=[version, doc, race_id, summary, self.updates_maxlen, *zargs], client=pipe)

    # ------------------------------------------------------------------ data loss
    def _lost(self) -> None:
        """Redis lost data since this writer took its token: take the new one, rewrite every live race."""
        self.token = self._take_token(keys=[SENTINEL_KEY], args=[uuid.uuid4().hex])
        self.rewrites += 1
        self._rewrite_pending = True
        log.warning("Redis has lost its data (its data-loss token is gone or changed); rewriting the %d live races "
                    "this worker holds", len(self.mirror), extra={"races": sorted(self.mirror)})
        started = time.monotonic()
        self._rewrite_all()
        log.info("Redis: %d live races rewritten in %.2f s", len(self.mirror), time.monotonic() - started,
                 extra={"races": sorted(self.mirror), "seconds": round(time.monotonic() - started, 2)})

    def _rewrite_all(self) -> None:
        for race_id in list(self.mirror):
            self._rewrite(race_id)
        self._rewrite_pending = False

    def _rewrite(self, race_id: str) -> None:
        """Write one race whole from the mirror: its events under their original ids, then the rest."""
        data = self.mirror[race_id]
        pipe = self.client.pipeline(transaction=False)
        if data.events or data.trimmed:
            args: list[Any] = [self.events_maxlen]
            for event_id, (stream_id, kind, doc) in data.events.items():
                args += [stream_id or "*", event_id, kind, doc]
            self._rewrite_events(keys=[events_key(race_id), event_index_key(race_id)], args=args,
                                 client=pipe)
            if data.trimmed:
                pipe.hset(event_index_key(race_id), mapping=data.trimmed)  # type: ignore[arg-type]
        self._content(pipe, race_id, data)
        results = pipe.execute()
        if data.events:
            for entry, stream_id in zip(data.events.values(), results[0], strict=True):
                entry[0] = stream_id

    # ------------------------------------------------------------------ a race first seen
    def _load(self, race_id: str) -> None:
        """Read what Redis holds of a race this writer has not written yet (after a flow restart); if
        Redis holds nothing of it, take what the history store has and write it back."""
        data = _RaceData()
        pipe = self.client.pipeline(transaction=False)
        pipe.get(state_key(race_id))
        pipe.hget(RACES_KEY, race_id)
        pipe.get(session_key(race_id))
        pipe.hgetall(lapchart_key(race_id))
        for key_of in (stints_key, strategy_key):
            pipe.hgetall(key_of(race_id))
            pipe.hgetall(order_key(key_of(race_id)))
        pipe.hgetall(strategy_history_key(race_id))
        pipe.xrange(events_key(race_id))
        pipe.hgetall(event_index_key(race_id))
        state, summary, session, chart, stints, stint_order, calls, call_order, history, entries, index = pipe.execute()
        if state is not None:
            doc = orjson.loads(state)
            zargs: list[Any] = []
            for row in doc.get("rows") or []:
                zargs += [row.get("position"), row.get("driver_number")]
            name = orjson.loads(summary).get("name") if summary else None
            data.state = (int(doc.get("version", -1)), bytes(state),
                          summary or orjson.dumps(summary_of_state(doc, name)), zargs)
            data.final = bool(doc.get("final"))
        data.session = session
        data.chart = {int(k): bytes(v) for k, v in chart.items()}
        for key_of, values, orders in ((stints_key, stints, stint_order), (strategy_key, calls, call_order)):
            for field, doc in values.items():
                data._newer(key_of, field.decode(), int(orders.get(field, -1)), bytes(doc))
        data.history = {k.decode(): bytes(v) for k, v in history.items()}
        for stream_id, fields in entries:
            data.events[fields[EVENT_ID_FIELD].decode()] = [stream_id, fields.get(EVENT_TYPE_FIELD, b"").decode(),
                                                            fields.get(EVENT_JSON_FIELD, b"null")]
        data.trimmed = {k.decode(): v for k, v in index.items() if k.decode() not in data.events}
        data.cap(self.events_maxlen)
        self.mirror[race_id] = data
        if data.empty and self.history is not None:
            for item in self.history(race_id):
                data.add(item)
            if not data.seal().empty:
                log.info("race %s is not in Redis: restored what PostgreSQL holds of it", race_id,
                         extra={"race_id": race_id, "events": len(data.events), "laps": len(data.chart)})
                self._rewrite(race_id)

    def close(self) -> None:
        self.client.close()


class _Partition(StatelessSinkPartition[Any]):
    def __init__(self, writer: RedisWriter) -> None:
        self.writer = writer

    def write_batch(self, items: list[Any]) -> None:
        self.writer.write(items)

    def close(self) -> None:
        self.writer.close()


class RedisSink(DynamicSink[Any]):
    """Bytewax sink: one :class:`RedisWriter` per worker. With ``database_url``, a race that Redis
    lost while the flow was down is restored from PostgreSQL as far as it holds it."""

    def __init__(self, url: str, events_maxlen: int = EVENTS_MAXLEN, retry: RetryPolicy | None = None,
                 database_url: str | None = None) -> None:
        self.url = url
        self.events_maxlen = events_maxlen
        self.retry = retry
        self.database_url = database_url

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        history: HistoryLoader | None = None
        if self.database_url:
            from dataflows.connectors.pg_sink import HistoryReader

            history = HistoryReader(self.database_url)
        return _Partition(RedisWriter(self.url, self.events_maxlen, retry=self.retry, history=history))
