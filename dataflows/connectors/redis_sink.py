"""Redis edge: live state for serving, written idempotently.

Layout per race (``{id}`` = race id):

- ``race:{id}:state``: JSON document of the latest leaderboard snapshot (rows, hero, fastest
  lap, flag, lap) plus ``positions`` (x/y per car); ``race:{id}:version`` its version. A write
  with a version not above the stored one is ignored, so replays and duplicate deliveries cannot
  move the state backwards.
- ``race:{id}:leaderboard``: sorted set, member = driver number, score = running position.
- ``race:{id}:events``: Redis Stream of race events (fields ``event_id``, ``type``, ``json``),
  capped at ``events_maxlen``; ``race:{id}:event_ids`` remembers which event ids were added,
  so each event is added exactly once whatever is replayed.
- ``race:{id}:updates``: capped stream of leaderboard versions (for live pushes).
- ``race:{id}:session``: JSON of the race's session (entry list, track outline, laps).
- ``race:{id}:lapchart``: hash lap → JSON list of driver numbers in crossing order at that lap.
- ``race:{id}:stints``: hash ``driver:stint`` → JSON of the stint's latest features.
- ``race:{id}:strategy``: hash driver → JSON of the car's latest strategy call
  (:class:`~schemas.model.Recommendation`). Both only move forward: a write older than the stored
  value (an earlier lap, or an open version of a stint already closed) is ignored.
- ``race:{id}:strategy:history``: hash ``lap:driver`` → JSON of every call made (one per car and lap).
- commentary lines go to the events stream too, with type ``COMMENTARY``.
- ``races``: hash race id → JSON summary (name, lap, status), for the race list.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.race.processor import LapChart
from schemas.model import Commentary, Leaderboard, RaceEvent, Recommendation, Session, Stint

STATE_KEY = "race:{}:state"
VERSION_KEY = "race:{}:version"
BOARD_KEY = "race:{}:leaderboard"
EVENTS_KEY = "race:{}:events"
EVENT_IDS_KEY = "race:{}:event_ids"
UPDATES_KEY = "race:{}:updates"
SESSION_KEY = "race:{}:session"
LAPCHART_KEY = "race:{}:lapchart"
STINTS_KEY = "race:{}:stints"
STRATEGY_KEY = "race:{}:strategy"
STRATEGY_HISTORY_KEY = "race:{}:strategy:history"
RACES_KEY = "races"

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

# KEYS: events, event_ids ; ARGV: maxlen, then triples event_id, type, json
_ADD_EVENTS = """
local added = 0
for i = 2, #ARGV, 3 do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                'event_id', ARGV[i], 'type', ARGV[i + 1], 'json', ARGV[i + 2])
    added = added + 1
  end
end
return added
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


def leaderboard_document(board: Leaderboard, positions: dict[int, tuple[float, float]] | None = None
                         ) -> dict[str, Any]:
    doc = board.to_dict()
    if positions:
        doc["positions"] = {str(n): [round(x, 1), round(y, 1)] for n, (x, y) in positions.items()}
    return doc


def race_summary(board: Leaderboard, name: str | None = None) -> dict[str, Any]:
    status = "finished" if board.final else ("chequered" if board.finished else "live")
    leader = board.rows[0].code if board.rows else None
    return {"race_id": board.race_id, "name": name, "lap": board.lap, "total_laps": board.total_laps,
            "status": status, "track_status": str(board.track_status), "leader": leader,
            "version": board.version}


class RedisWriter:
    """Writes outputs to Redis (idempotent). Usable outside Bytewax (tools, tests)."""

    def __init__(self, url: str, events_maxlen: int = 20_000, updates_maxlen: int = 1000) -> None:
        self.client = redis.Redis.from_url(url)
        self._put_state = self.client.register_script(_PUT_STATE)
        self._add_events = self.client.register_script(_ADD_EVENTS)
        self._put_newer = self.client.register_script(_PUT_NEWER)
        self.events_maxlen = events_maxlen
        self.updates_maxlen = updates_maxlen

    def write(self, items: list[Any]) -> None:
        latest: dict[str, tuple[Leaderboard, dict[int, tuple[float, float]] | None, str | None]] = {}
        events: dict[str, list[RaceEvent | Commentary]] = {}
        sessions: dict[str, Session] = {}
        charts: dict[str, dict[int, list[int]]] = {}
        # (key template, race) → field → (order, record): the newest of this batch per field
        newer: dict[tuple[str, str], dict[str, tuple[int, Stint | Recommendation]]] = {}
        history: dict[str, dict[str, Recommendation]] = {}
        for item in items:
            if isinstance(item, LapChart):
                charts.setdefault(item.race_id, {})[item.lap] = item.order
                continue
            if isinstance(item, (Stint, Recommendation)):
                if isinstance(item, Recommendation):
                    history.setdefault(item.race_id, {})[f"{item.lap}:{item.driver_number}"] = item
                if isinstance(item, Stint):
                    slot, order = (STINTS_KEY, f"{item.driver_number}:{item.stint}"), 2 * item.end_lap + (not item.open)
                else:
                    slot, order = (STRATEGY_KEY, str(item.driver_number)), item.lap
                fields = newer.setdefault((slot[0], item.race_id), {})
                if slot[1] not in fields or order >= fields[slot[1]][0]:
                    fields[slot[1]] = (order, item)
                continue
            if isinstance(item, (RaceEvent, Commentary)):
                events.setdefault(item.race_id, []).append(item)
            elif isinstance(item, SessionDoc):
                sessions[item.session.race_id] = item.session
            elif isinstance(item, BoardUpdate):
                cur = latest.get(item.board.race_id)
                if cur is None or item.board.version > cur[0].version:
                    latest[item.board.race_id] = (item.board, item.positions, item.name)
            elif isinstance(item, Leaderboard):
                cur = latest.get(item.race_id)
                if cur is None or item.version > cur[0].version:
                    latest[item.race_id] = (item, None, None)
        pipe = self.client.pipeline(transaction=False)
        for race_id, session in sessions.items():
            doc = session.to_dict()
            doc["start_time"] = session.start_time.isoformat()
            pipe.set(SESSION_KEY.format(race_id), orjson.dumps(doc))
        for race_id, laps in charts.items():
            pipe.hset(LAPCHART_KEY.format(race_id), mapping={lap: orjson.dumps(order) for lap, order in laps.items()})
        for (template, race_id), fields in newer.items():
            key = template.format(race_id)
            triples: list[Any] = []
            for field_name, (order, record) in fields.items():
                triples += [field_name, order, orjson.dumps(record.to_dict())]
            self._put_newer(keys=[key, key + ":order"], args=triples, client=pipe)
        for race_id, calls in history.items():
            pipe.hset(STRATEGY_HISTORY_KEY.format(race_id),
                      mapping={k: orjson.dumps(c.to_dict()) for k, c in calls.items()})
        for race_id, evs in events.items():
            args: list[Any] = [self.events_maxlen]
            for e in evs:
                kind = "COMMENTARY" if isinstance(e, Commentary) else str(e.type)
                args += [e.event_id, kind, orjson.dumps(e.to_dict())]
            self._add_events(keys=[EVENTS_KEY.format(race_id), EVENT_IDS_KEY.format(race_id)],
                             args=args, client=pipe)
        for race_id, (board, positions, name) in latest.items():
            zargs: list[Any] = []
            for row in board.rows:
                zargs += [row.position, row.driver_number]
            self._put_state(
                keys=[STATE_KEY.format(race_id), VERSION_KEY.format(race_id),
                      BOARD_KEY.format(race_id), UPDATES_KEY.format(race_id), RACES_KEY],
                args=[board.version, orjson.dumps(leaderboard_document(board, positions)), race_id,
                      orjson.dumps(race_summary(board, name)), self.updates_maxlen, *zargs],
                client=pipe,
            )
        pipe.execute()

    def close(self) -> None:
        self.client.close()


class BoardUpdate:
    """A leaderboard snapshot with what only Redis keeps: car x/y for the map, the race name."""

    __slots__ = ("board", "name", "positions")

    def __init__(self, board: Leaderboard, positions: dict[int, tuple[float, float]] | None,
                 name: str | None) -> None:
        self.board, self.positions, self.name = board, positions, name


class SessionDoc:
    """The race's session, for serving (entry list, track outline)."""

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        self.session = session


class _Partition(StatelessSinkPartition[Any]):
    def __init__(self, writer: RedisWriter) -> None:
        self.writer = writer

    def write_batch(self, items: list[Any]) -> None:
        self.writer.write(items)

    def close(self) -> None:
        self.writer.close()


class RedisSink(DynamicSink[Any]):
    """Bytewax sink: one :class:`RedisWriter` per worker."""

    def __init__(self, url: str, events_maxlen: int = 20_000) -> None:
        self.url = url
        self.events_maxlen = events_maxlen

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(RedisWriter(self.url, self.events_maxlen))
