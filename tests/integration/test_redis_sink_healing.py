"""The Redis writer heals data loss (issue 11, finding 5) and rides out outages (finding 4), against
a Redis-compatible server of this module's own (the tests flush and stop it)."""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg.conninfo import make_conninfo

from dataflows.connectors.pg_sink import HistoryReader, PgWriter
from dataflows.connectors.redis_sink import RedisWriter
from dataflows.connectors.retry import SINK_RETRIES, RetryPolicy
from dataflows.outputs import LapChart
from infra.migrate import migrate
from infra.services import EmbeddedRedis, free_port
from schemas.model import Commentary, Leaderboard, RaceEvent, Recommendation, Stint
from schemas.redis_layout import (
    RACES_KEY,
    BoardUpdate,
    SessionDoc,
    event_index_key,
    events_key,
    lapchart_key,
    race_keys_pattern,
    stints_key,
)
from tests.integration.test_pg_sink import _race

FAST = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=0.5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(free_port(), tmp_path_factory.mktemp("redis"), persist=True) as s:
        yield s


@pytest.fixture
def client(server: EmbeddedRedis) -> Iterator[redis.Redis]:
    if not server.running:
        server.start()
    c = redis.Redis.from_url(server.url)
    c.flushall()  # this module's own server
    yield c
    c.close()


def _outputs(race_id: str) -> list[Any]:
    """A small race's Redis outputs (state, events, lap charts, stints), plus strategy calls and
    commentary, for ``race_id``."""
    _r, items = _race()
    out: list[Any] = []
    for item in items:
        if isinstance(item, (BoardUpdate, SessionDoc, RaceEvent, LapChart, Stint)):
            item = copy.deepcopy(item)
            target = item.board if isinstance(item, BoardUpdate) else item.session if isinstance(
                item, SessionDoc) else item
            target.race_id = race_id
            if isinstance(item, RaceEvent):
                item.event_id = f"{race_id}:{item.event_id}"
            out.append(item)
            if isinstance(item, RaceEvent):
                out.append(Commentary(f"{item.event_id}:c", race_id, item.ts_ms, item.lap, item.message,
                                      item.event_id))
    for lap in (1, 2):
        for n in (1, 2, 3):
            out.append(Recommendation(f"{race_id}:rec:{n}:{lap}", race_id, n, lap, "STAY_OUT"))
    return out


def _live(items: list[Any]) -> list[Any]:
    """The items without the final state, so the race stays live (in the writer's memory)."""
    boards = [i for i in items if isinstance(i, BoardUpdate)]
    final = [b for b in boards if b.board.final]
    return [i for i in items if i not in final]


def _dump(c: redis.Redis, race_id: str) -> dict[str, Any]:
    """Everything Redis holds of a race, stream ids left out (they are compared apart)."""
    out: dict[str, Any] = {}
    for key in sorted(c.scan_iter(match=race_keys_pattern(race_id))):
        kind = c.type(key)
        if kind == b"stream":
            if key.endswith(b":updates"):
                continue  # version pings, one per state write: not content
            out[key.decode()] = [f for _i, f in c.xrange(key)]
        elif kind == b"hash" and key.endswith(b":event_index"):
            out[key.decode()] = sorted(c.hkeys(key))  # values are stream ids
        elif kind == b"hash":
            out[key.decode()] = c.hgetall(key)
        elif kind == b"zset":
            out[key.decode()] = c.zrange(key, 0, -1, withscores=True)
        else:
            out[key.decode()] = c.get(key)
    out["races"] = c.hget(RACES_KEY, race_id)
    return out


def _event_index(c: redis.Redis, race_id: str) -> dict[bytes, bytes]:
    return c.hgetall(event_index_key(race_id))


def test_a_flush_mid_race_brings_the_race_back_whole_with_the_same_stream_ids(client: redis.Redis,
                                                                             server: EmbeddedRedis) -> None:
    items = _live(_outputs("a"))
    half = len(items) // 2
    writer = RedisWriter(server.url, retry=FAST)
    writer.write(items[:half])
    before = client.xrange(events_key("a"))
    assert before
    client.flushall()
    writer.write(items[half:])
    after = client.xrange(events_key("a"))
    assert after[:len(before)] == before  # the old entries, under their old ids
    ids = [f[b"event_id"] for _i, f in after]
    assert len(ids) == len(set(ids)) == len({i.event_id for i in items if isinstance(i, (RaceEvent, Commentary))})
    assert _event_index(client, "a") == {f[b"event_id"]: i for i, f in after}
    assert writer.rewrites == 1

    # everything equals what an uninterrupted writer leaves
    got = _dump(client, "a")
    client.flushall()
    RedisWriter(server.url).write(items)
    want = _dump(client, "a")
    assert got == want
    writer.close()


def test_each_worker_rewrites_the_races_it_owns(client: redis.Redis, server: EmbeddedRedis) -> None:
    one, two = RedisWriter(server.url, retry=FAST), RedisWriter(server.url, retry=FAST)
    race_a, race_b = _live(_outputs("a")), _live(_outputs("b"))
    one.write(race_a[:-3])
    two.write(race_b[:-3])
    client.flushall()
    one.write(race_a[-3:])  # finds the loss first, sets a new token, rewrites race a
    two.write(race_b[-3:])  # its token is stale: rewrites race b
    assert (one.rewrites, two.rewrites) == (1, 1)
    got = {r: _dump(client, r) for r in ("a", "b")}
    client.flushall()
    RedisWriter(server.url).write(race_a + race_b)
    assert got == {r: _dump(client, r) for r in ("a", "b")}


def test_a_finished_race_leaves_the_writers_memory(client: redis.Redis, server: EmbeddedRedis) -> None:
    writer = RedisWriter(server.url)
    items = _outputs("f")
    writer.write(_live(items))
    assert "f" in writer.mirror and len(writer.mirror["f"].events) > 0
    writer.write(items)  # now with the final state
    assert "f" not in writer.mirror and "f" in writer.finished


def test_the_writers_memory_keeps_only_the_capped_streams_payloads(client: redis.Redis, server: EmbeddedRedis) -> None:
    writer = RedisWriter(server.url, events_maxlen=100)
    events = [RaceEvent(f"cap:e{i}", "cap", "PIT_STOP", 1000 + i, 1, message=f"e{i}") for i in range(250)]  # type: ignore[arg-type]
    for i in range(0, 250, 50):
        writer.write(events[i:i + 50])
    mirror = writer.mirror["cap"]
    assert len(mirror.events) <= 100 and len(mirror.events) + len(mirror.trimmed) == 250
    client.flushall()
    writer.write([RaceEvent("cap:e250", "cap", "PIT_STOP", 2000, 1, message="late")])  # type: ignore[arg-type]
    index = _event_index(client, "cap")
    assert len(index) == 251  # replays of trimmed events are still recognised
    writer.write(events[:10])
    assert len(_event_index(client, "cap")) == 251
    assert client.xlen(events_key("cap")) <= 250


@pytest.fixture
def history(postgres_url: str) -> Iterator[str]:
    schema = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    conninfo = make_conninfo(postgres_url, options=f"-csearch_path={schema}")
    try:
        migrate(conninfo)
        yield conninfo
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_a_race_lost_while_the_flow_was_down_comes_back_from_postgresql(client: redis.Redis, server: EmbeddedRedis,
                                                                       history: str) -> None:
    _r, pg_items = _race()
    items = _live([i for i in pg_items if not isinstance(i, (BoardUpdate, Leaderboard))]) + [
        i for i in pg_items if isinstance(i, BoardUpdate) and not i.board.final]
    pg = PgWriter(history)
    pg.write(items)
    pg.close()
    RedisWriter(server.url).write(items)
    want_events = {f[b"event_id"] for _i, f in client.xrange(events_key("r"))}
    want_chart, want_stints = client.hgetall(lapchart_key("r")), client.hgetall(stints_key("r"))
    client.flushall()  # lost while the flow was down; then the flow resumes from its snapshot
    restarted = RedisWriter(server.url, history=HistoryReader(history))
    late = RaceEvent("r:late", "r", "PIT_STOP", 300_000, 3, message="late")  # type: ignore[arg-type]
    restarted.write([late])
    got = {f[b"event_id"] for _i, f in client.xrange(events_key("r"))}
    assert got == want_events | {b"r:late"}
    assert client.hgetall(lapchart_key("r")) == want_chart
    assert {k: v for k, v in client.hgetall(stints_key("r")).items()}.keys() == want_stints.keys()


def _retries() -> float:
    return SINK_RETRIES.labels(sink="redis")._value.get()  # type: ignore[attr-defined,no-any-return]


def test_a_write_during_an_outage_waits_for_redis_and_says_so_once(client: redis.Redis, server: EmbeddedRedis,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    writer = RedisWriter(server.url, retry=FAST)
    items = _live(_outputs("o"))
    writer.write(items[:5])
    retries = _retries()
    server.stop()
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            writer.write(items[5:])
        except BaseException as e:
            errors.append(e)
        done.set()

    with caplog.at_level(logging.INFO, logger="racewire.flow"):
        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        time.sleep(2.0)
        assert not done.is_set(), "the write returned while Redis was down"
        server.start()  # persistent: it comes back with its data
        assert done.wait(30), "the write did not complete once Redis was back"
    assert not errors
    sink_logs = [r for r in caplog.records if r.name == "racewire.flow.sink"]
    assert [r.levelname for r in sink_logs] == ["WARNING", "INFO"]
    assert getattr(sink_logs[1], "retries", 0) >= 1 and getattr(sink_logs[1], "outage_s", 0) >= 1.5
    assert _retries() - retries == sink_logs[1].retries  # type: ignore[attr-defined]
    assert writer.rewrites == 0  # the data survived the restart: nothing to rewrite
    ids = [f[b"event_id"] for _i, f in client.xrange(events_key("o"))]
    assert len(ids) == len(set(ids)) == len({i.event_id for i in items if isinstance(i, (RaceEvent, Commentary))})


def test_a_restart_without_persistence_is_an_outage_then_a_data_loss(tmp_path: Path) -> None:
    with EmbeddedRedis(free_port(), tmp_path / "redis") as volatile:
        c = redis.Redis.from_url(volatile.url)
        writer = RedisWriter(volatile.url, retry=FAST)
        items = _live(_outputs("v"))
        writer.write(items[:8])
        before = c.xrange(events_key("v"))
        volatile.stop()
        thread = threading.Thread(target=writer.write, args=(items[8:],), daemon=True)
        thread.start()
        time.sleep(1.0)
        volatile.start()  # empty
        thread.join(30)
        assert not thread.is_alive()
        after = c.xrange(events_key("v"))
        assert after[:len(before)] == before and writer.rewrites == 1
        assert len(after) == len({i.event_id for i in items if isinstance(i, (RaceEvent, Commentary))})
        c.close()


def test_an_error_that_is_not_an_outage_is_raised_at_once(history: str, postgres_url: str) -> None:
    writer = PgWriter(history, retry=FAST)
    with psycopg.connect(history, autocommit=True) as conn:
        conn.execute("DROP TABLE events")
    before = SINK_RETRIES.labels(sink="postgres")._value.get()  # type: ignore[attr-defined]
    with pytest.raises(psycopg.errors.UndefinedTable):
        writer.write([RaceEvent("x:1", "x", "PIT_STOP", 1, 1, message="m")])  # type: ignore[arg-type]
    assert SINK_RETRIES.labels(sink="postgres")._value.get() == before  # type: ignore[attr-defined]
    writer.close()
