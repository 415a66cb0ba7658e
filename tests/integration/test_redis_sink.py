"""The Redis writer is idempotent: the same outputs twice leave the same state and no duplicates."""

from __future__ import annotations

import json

import redis

from dataflows.connectors.redis_sink import (
    BOARD_KEY,
    EVENTS_KEY,
    STATE_KEY,
    BoardUpdate,
    RedisWriter,
)
from schemas.model import EventType, Leaderboard, RaceEvent
from tests.unit.race_builder import Race


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
    state = redis_client.get(STATE_KEY.format(unique_race_id))
    events = redis_client.xrange(EVENTS_KEY.format(unique_race_id))
    board = redis_client.zrange(BOARD_KEY.format(unique_race_id), 0, -1, withscores=True)
    assert state is not None and events and len(board) == 3

    writer.write(outputs)  # a replay
    for item in outputs:  # and one by one, as a restarted flow would
        writer.write([item])
    assert redis_client.get(STATE_KEY.format(unique_race_id)) == state
    assert redis_client.xrange(EVENTS_KEY.format(unique_race_id)) == events
    assert redis_client.zrange(BOARD_KEY.format(unique_race_id), 0, -1, withscores=True) == board
    doc = json.loads(state)
    assert doc["final"] and doc["positions"] == {"1": [1.0, 2.0]}
    ids = [f[b"event_id"].decode() for _id, f in events]
    assert len(ids) == len(set(ids))
    assert any(f[b"type"] == str(EventType.CLASSIFICATION).encode() for _id, f in events)
    assert json.loads(redis_client.hget("races", unique_race_id) or b"{}")["status"] == "finished"
    redis_client.hdel("races", unique_race_id)


def test_an_older_version_never_overwrites_a_newer_one(
    redis_client: redis.Redis, redis_url: str, unique_race_id: str
) -> None:
    boards = [o for o in _outputs(unique_race_id) if isinstance(o, BoardUpdate)]
    writer = RedisWriter(redis_url)
    writer.write([boards[-1]])
    writer.write([boards[0]])
    doc = json.loads(redis_client.get(STATE_KEY.format(unique_race_id)) or b"{}")
    assert doc["version"] == boards[-1].board.version
    redis_client.hdel("races", unique_race_id)
