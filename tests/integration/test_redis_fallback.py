"""Serving without Redis: the live race endpoints answer from PostgreSQL (``X-Racewire-Source``),
switch back to Redis when it answers again, and ``racewire rebuild-cache`` restores Redis from
PostgreSQL, idempotently."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import psycopg
import pytest
import redis
import redis.asyncio as aioredis
from psycopg.conninfo import make_conninfo

from dataflows.connectors.pg_sink import PgWriter
from dataflows.connectors.redis_sink import RedisWriter
from infra.bench.harness import serve_in_thread
from infra.cli import main as cli_main
from infra.migrate import migrate
from infra.rebuild_cache import rebuild
from schemas.redis_layout import (
    RACES_KEY,
    events_key,
    lapchart_key,
    leaderboard_key,
    race_keys_pattern,
    session_key,
    state_key,
    stints_key,
    version_key,
)
from schemas.settings import Settings
from serving.app import ServingOptions, create_app
from tests.integration.test_pg_sink import _race

FAST = ServingOptions(rate_limit_per_s=0, sse_ping_s=1, sse_block_ms=500, sse_linger_s=0.5)
DEAD_REDIS = "redis://127.0.0.1:1/0"
RACE = "r"  # the builder's race id; kept apart from other tests by using Redis dbs of this test's own
LIVE_DB, REBUILD_DB = 11, 12


def _db_url(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def _forget(client: redis.Redis) -> None:
    keys = list(client.scan_iter(match=race_keys_pattern(RACE)))
    if keys:
        client.delete(*keys)
    client.hdel(RACES_KEY, RACE)


@pytest.fixture
def stores(postgres_url: str, redis_url: str) -> Iterator[dict[str, Any]]:
    """The race written to a PostgreSQL schema of this test's own and to Redis db 11; db 12 empty."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    conninfo = make_conninfo(postgres_url, options=f"-csearch_path={schema}")
    live, spare = _db_url(redis_url, LIVE_DB), _db_url(redis_url, REBUILD_DB)
    clients = [redis.Redis.from_url(live), redis.Redis.from_url(spare)]
    try:
        for c in clients:
            _forget(c)
        migrate(conninfo)
        _r, outputs = _race()
        pg = PgWriter(conninfo)
        pg.write(outputs)
        pg.close()
        rw = RedisWriter(live)
        rw.write(outputs)
        rw.close()
        yield {"pg": conninfo, "live": live, "spare": spare, "live_client": clients[0], "spare_client": clients[1]}
    finally:
        for c in clients:
            _forget(c)
            c.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _order(doc: dict[str, Any]) -> list[int]:
    return [r["driver_number"] for r in doc["rows"]]


def test_dead_redis_falls_back_to_postgresql_and_recovers(stores: dict[str, Any]) -> None:
    original = orjson.loads(stores["live_client"].get(state_key(RACE)))
    settings = Settings(redis_url=DEAD_REDIS, database_url=stores["pg"], api_key="test-key-123")  # type: ignore[arg-type]
    app = create_app(settings, FAST)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        r = http.get(f"/api/races/{RACE}/leaderboard")
        assert r.status_code == 200, r.text
        assert r.headers["X-Racewire-Source"] == "postgresql"
        board = r.json()
        assert _order(board) == _order(original) == [1, 3, 2, 4]
        assert board["rows"] == original["rows"] and board["final"] == original["final"]

        races = http.get("/api/races")
        assert races.status_code == 200 and races.headers["X-Racewire-Source"] == "postgresql"
        assert [(x["race_id"], x["status"], x["leader"]) for x in races.json()["races"]] == [(RACE, "finished", "AAA")]
        fastest = http.get(f"/api/races/{RACE}/fastest-lap")
        assert fastest.headers["X-Racewire-Source"] == "postgresql"
        assert fastest.json()["fastest_lap"] == original["fastest_lap"]
        hero = http.get(f"/api/races/{RACE}/hero")
        assert hero.headers["X-Racewire-Source"] == "postgresql"
        assert hero.json()["hero"] == original["hero"] and original["hero"] is not None
        events = http.get(f"/api/races/{RACE}/events", params={"limit": 1000})
        assert events.headers["X-Racewire-Source"] == "postgresql"
        redis_types = sorted(f[b"type"].decode() for _i, f in stores["live_client"].xrange(events_key(RACE))
                             if f[b"type"] != b"COMMENTARY")
        assert sorted(e["type"] for e in events.json()["events"]) == redis_types
        page = http.get(f"/api/races/{RACE}/events", params={"limit": 2}).json()
        after = http.get(f"/api/races/{RACE}/events", params={"after": page["events"][0]["id"], "limit": 1}).json()
        assert after["events"] == page["events"][1:]
        drivers = http.get(f"/api/races/{RACE}/drivers")
        assert drivers.headers["X-Racewire-Source"] == "postgresql"
        assert [d["code"] for d in drivers.json()["drivers"]] == ["AAA", "BBB", "CCC", "DDD"]
        missing = http.get("/api/races/nope/leaderboard")
        assert missing.status_code == 404 and missing.json()["detail"].endswith("known races: r")

        # Redis is back (here: the app's client now reaches a live server); the next probe finds it
        app.state.store.client = aioredis.Redis.from_url(stores["live"])
        deadline = time.monotonic() + 5
        while True:
            r = http.get(f"/api/races/{RACE}/leaderboard")
            if r.headers["X-Racewire-Source"] == "redis" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 200 and r.headers["X-Racewire-Source"] == "redis"
        assert r.json() == original


def test_neither_store_is_a_503_naming_both() -> None:
    settings = Settings(redis_url=DEAD_REDIS, database_url="postgresql://racewire@127.0.0.1:1/none",  # type: ignore[arg-type]
                        api_key="test-key-123")
    with serve_in_thread(create_app(settings, FAST)) as url:
        r = httpx.get(f"{url}/api/races/r/leaderboard", timeout=10)
    assert r.status_code == 503
    assert "Redis" in r.json()["detail"] and "PostgreSQL" in r.json()["detail"]


def test_rebuild_cache_restores_the_leaderboard_idempotently(stores: dict[str, Any],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    live, spare = stores["live_client"], stores["spare_client"]
    original = orjson.loads(live.get(state_key(RACE)))
    summary = rebuild(RACE, stores["pg"], stores["spare"])
    assert summary["state_written"] and summary["leaderboard"] == _order(original)
    restored = orjson.loads(spare.get(state_key(RACE)))
    assert restored["rows"] == original["rows"] and restored["version"] >= 0
    assert int(spare.get(version_key(RACE))) == restored["version"]
    board = leaderboard_key(RACE)
    assert spare.zrange(board, 0, -1, withscores=True) == live.zrange(board, 0, -1, withscores=True)
    assert orjson.loads(spare.hget(RACES_KEY, RACE))["status"] == "finished"
    assert spare.xlen(events_key(RACE)) == summary["events_added"] == summary["events_stored"] > 0
    assert summary["session_written"] and orjson.loads(spare.get(session_key(RACE)))["name"] == "Test GP"
    assert spare.hgetall(lapchart_key(RACE)) == live.hgetall(lapchart_key(RACE))
    assert summary["lap_chart_laps"] == 3 and summary["stints"] == live.hlen(stints_key(RACE)) > 0

    # again, through the command: nothing changes
    assert cli_main(["rebuild-cache", "--race", RACE, "--database-url", stores["pg"],
                     "--redis-url", stores["spare"]]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not again["state_written"] and again["events_added"] == 0 and not again["session_written"]
    assert orjson.loads(spare.get(state_key(RACE))) == restored

    assert cli_main(["rebuild-cache", "--race", "nope", "--database-url", stores["pg"],
                     "--redis-url", stores["spare"]]) == 1


def test_a_race_missing_from_a_live_redis_is_answered_from_postgresql(stores: dict[str, Any]) -> None:
    """Finding 5 of issue 11: Redis answers but has lost the race (a flush, a restart without
    persistence): the race endpoints answer from PostgreSQL and say so, instead of 404."""
    live = stores["live_client"]
    original = orjson.loads(live.get(state_key(RACE)))
    _forget(live)  # the race's keys are gone; Redis itself is up
    settings = Settings(redis_url=stores["live"], database_url=stores["pg"], api_key="test-key-123")  # type: ignore[arg-type]
    with serve_in_thread(create_app(settings, FAST)) as url, httpx.Client(base_url=url, timeout=10) as http:
        r = http.get(f"/api/races/{RACE}/leaderboard")
        assert r.status_code == 200, r.text
        assert r.headers["X-Racewire-Source"] == "postgresql"
        assert r.json()["rows"] == original["rows"]
        for path in ("hero", "fastest-lap", "drivers", "events"):
            got = http.get(f"/api/races/{RACE}/{path}")
            assert got.status_code == 200, (path, got.text)
            assert got.headers["X-Racewire-Source"] == "postgresql", path
        assert http.get(f"/api/races/{RACE}/hero").json()["hero"] == original["hero"]
        assert [e["type"] for e in http.get(f"/api/races/{RACE}/events").json()["events"]]
        races = http.get("/api/races").json()["races"]
        assert [(x["race_id"], x["status"]) for x in races if x["race_id"] == RACE] == [(RACE, "finished")]
        assert http.get("/api/races/nope/leaderboard").status_code == 404

        # the race is back in Redis: answers come from Redis again
        rw = RedisWriter(stores["live"])
        rw.write(_race()[1])
        rw.close()
        r = http.get(f"/api/races/{RACE}/leaderboard")
        assert r.status_code == 200 and r.headers["X-Racewire-Source"] == "redis"


def test_rebuild_cache_says_so_when_redis_is_unreachable(stores: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("infra.rebuild_cache.REDIS_WAIT_S", 0.5)
    assert cli_main(["rebuild-cache", "--race", RACE, "--database-url", stores["pg"], "--redis-url", DEAD_REDIS]) == 1
    err = capsys.readouterr().err
    assert "Redis at redis://127.0.0.1:1/0 did not answer" in err and "RACEWIRE_REDIS_URL" in err
