"""The Redis writer is idempotent: the same outputs twice leave the same state and no duplicates."""

from __future__ import annotations

import json

import redis

from dataflows.connectors.redis_sink import RedisWriter
from schemas.model import EventType, Leaderboard, RaceEvent
from schemas.redis_layout import (
    RACES_KEY,
    BoardUpdate,
    events_key,
    leaderboard_key,
    order_key,
    state_key,
    stints_key,
    strategy_key,
)
from tests.support.race_builder import Race


def _outputs(race_id: str) -> list[object]:
    r = Race(cars=3, laps=2)
    for n, t in ((1, 90_000), (2, 90_500), (3, 91_000), (2, 180_000), (1, 180_400), (3, 181_000)):
        r.lap(n, 1 if t < 100_000 else 2, t)
    out: list[object] = []
    for o in r.outputs:
        if isinstance(o, Leaderboard):
            o.race_id = race_id
            out.append(BoardUpdate(o, {1: (1.0, 2.0)}, "Test GP"))
        elif isinstance(o, RaceEvent):
            o.race_id = race_id
            o.event_id = o.event_id.replace("r:", f"{race_id}:", 1)
            out.append(o)
    return out


def test_replaying_outputs_changes_nothing(redis_client: redis.Redis, redis_url: str, unique_race_id: str) -> None:
    outputs = _outputs(unique_race_id)
    writer = RedisWriter(redis_url)
    writer.write(outputs)
    state = redis_client.get(state_key(unique_race_id))
    events = redis_client.xrange(events_key(unique_race_id))
    board = redis_client.zrange(leaderboard_key(unique_race_id), 0, -1, withscores=True)
    assert state is not None and events and len(board) == 3

    writer.write(outputs)  # a replay
    for item in outputs:  # and one by one, as a restarted flow would
        writer.write([item])
    assert redis_client.get(state_key(unique_race_id)) == state
    assert redis_client.xrange(events_key(unique_race_id)) == events
    assert redis_client.zrange(leaderboard_key(unique_race_id), 0, -1, withscores=True) == board
    doc = json.loads(state)
    assert doc["final"] and doc["positions"] == {"1": [1.0, 2.0]}
    ids = [f[b"event_id"].decode() for _id, f in events]
    assert len(ids) == len(set(ids))
    assert any(f[b"type"] == str(EventType.CLASSIFICATION).encode() for _id, f in events)
    assert json.loads(redis_client.hget(RACES_KEY, unique_race_id) or b"{}")["status"] == "finished"
    redis_client.hdel(RACES_KEY, unique_race_id)


def test_an_older_version_never_overwrites_a_newer_one(
    redis_client: redis.Redis, redis_url: str, unique_race_id: str
) -> None:
    boards = [o for o in _outputs(unique_race_id) if isinstance(o, BoardUpdate)]
    writer = RedisWriter(redis_url)
    writer.write([boards[-1]])
    writer.write([boards[0]])
    doc = json.loads(redis_client.get(state_key(unique_race_id)) or b"{}")
    assert doc["version"] == boards[-1].board.version
    redis_client.hdel(RACES_KEY, unique_race_id)


def test_stints_and_strategy_calls_only_move_forward(redis_client: redis.Redis, redis_url: str,
                                                     unique_race_id: str) -> None:
    from schemas.model import Recommendation, Stint

    rid = unique_race_id

    def stint(end: int, open_: bool) -> Stint:
        return Stint(rid, 44, 1, "SOFT", 1, end, end, 0, end - 1, open_, 95_000)

    def call(lap: int) -> Recommendation:
        return Recommendation(f"{rid}:rec:44:{lap}", rid, 44, lap, "STAY_OUT")

    writer = RedisWriter(redis_url)
    writer.write([stint(10, True), stint(12, False), call(11), call(12)])
    writer.write([stint(12, True), stint(11, True), call(10)])  # older versions, replayed late
    got_stint = json.loads(redis_client.hget(stints_key(rid), "44:1") or b"{}")
    assert (got_stint["end_lap"], got_stint["open"]) == (12, False)
    assert json.loads(redis_client.hget(strategy_key(rid), "44") or b"{}")["lap"] == 12
    writer.write([stint(12, False), call(13)])
    assert json.loads(redis_client.hget(strategy_key(rid), "44") or b"{}")["lap"] == 13
    redis_client.delete(stints_key(rid), order_key(stints_key(rid)),
                        strategy_key(rid), order_key(strategy_key(rid)))
