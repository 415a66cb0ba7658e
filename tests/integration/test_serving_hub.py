"""The fan-out hub against real Redis: one reader per race, slow clients resynchronised without loss."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from dataflows.connectors.redis_sink import RedisWriter
from schemas.model import EventType, RaceEvent
from schemas.redis_layout import RACES_KEY, BoardUpdate, events_key
from serving.replay import play, race_outputs
from serving.sse import Hub, StreamHooks, client_stream
from serving.sse.framing import SSEParser

pytestmark = pytest.mark.integration


def _event(race_id: str, i: int) -> RaceEvent:
    return RaceEvent(f"{race_id}:ev:{i}", race_id, EventType.PIT_STOP, 1000 + i, 1, driver_number=1, code="AAA",
                     message=f"stop {i}")


async def _read(gen: Any, parser: SSEParser, want: int, timeout: float = 10.0) -> list[Any]:
    out: list[Any] = []
    async with asyncio.timeout(timeout):
        while len(out) < want:
            out += parser.feed(await anext(gen))
    return out


def test_slow_client_is_resynced_and_fast_clients_get_everything(redis_url: str, redis_client: redis.Redis,
                                                                 unique_race_id: str) -> None:
    race = unique_race_id
    _, outputs = race_outputs(race, 3, 2)
    writer = RedisWriter(redis_url)
    for _ in play(writer, outputs[:5]):
        pass

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        resyncs: list[int] = []
        hub = Hub(client, queue_size=4, block_ms=200)
        try:
            slow = client_stream(hub, race, None, hooks=StreamHooks(on_resync=lambda: resyncs.append(1)))
            fast = client_stream(hub, race, None)
            ps, pf = SSEParser(), SSEParser()
            assert (await _read(slow, ps, 1))[0].event == "leaderboard"
            assert (await _read(fast, pf, 1))[0].event == "leaderboard"
            assert len(hub.channels) == 1 and hub.clients == 2  # one reader for both

            # 40 events arrive while the slow client reads nothing: its queue (4) overflows
            await asyncio.to_thread(writer.write, [_event(race, i) for i in range(40)])
            fast_got = await _read(fast, pf, 40)
            await asyncio.sleep(0.5)  # the reader has fanned everything out by now
            slow_got = await _read(slow, ps, 40)
            want = [f"{race}:ev:{i}" for i in range(40)]
            assert [orjson.loads(e.data)["event_id"] for e in fast_got] == want
            assert [orjson.loads(e.data)["event_id"] for e in slow_got if e.event == "event"] == want
            assert resyncs == [1]

            # and it goes on live after the resync
            await asyncio.to_thread(writer.write, [_event(race, 40)])
            (last,) = await _read(slow, ps, 1)
            assert orjson.loads(last.data)["event_id"] == f"{race}:ev:40"
            await slow.aclose()
            await fast.aclose()
            assert hub.clients == 0
        finally:
            await hub.close()
            await client.aclose()

    try:
        asyncio.run(scenario())
    finally:
        writer.close()


def test_trimmed_history_is_reported_as_a_gap(redis_url: str, redis_client: redis.Redis, unique_race_id: str) -> None:
    race = unique_race_id
    writer = RedisWriter(redis_url, events_maxlen=100)
    writer.write([_event(race, i) for i in range(5)])
    first_id = redis_client.xrange(events_key(race), count=1)[0][0].decode()
    # the capped stream drops its oldest entries
    redis_client.xtrim(events_key(race), maxlen=2, approximate=False)
    redis_client.hset(RACES_KEY, race, b"{}")

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        hub = Hub(client, block_ms=200)
        try:
            gen = client_stream(hub, race, first_id)
            got = await _read(gen, SSEParser(), 3)
            assert got[0].event == "gap"
            assert [orjson.loads(e.data)["event_id"] for e in got[1:]] == [f"{race}:ev:3", f"{race}:ev:4"]
            await gen.aclose()
        finally:
            await hub.close()
            await client.aclose()

    try:
        asyncio.run(scenario())
    finally:
        redis_client.hdel(RACES_KEY, race)
        writer.close()


def test_fanout_budget_thins_telemetry_snapshots_but_never_the_last(redis_url: str, redis_client: redis.Redis,
                                                                    unique_race_id: str) -> None:
    from dataclasses import replace


    race = unique_race_id
    _, outputs = race_outputs(race, 3, 1)
    board = next(o.item.board for o in outputs if isinstance(o.item, BoardUpdate))
    writer = RedisWriter(redis_url)
    writer.write([BoardUpdate(replace(board, version=1, reason="timing"), None, "x")])

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        hub = Hub(client, block_ms=200, fanout_budget_per_s=2)  # one subscriber: at most 2 telemetry boards/s
        try:
            gen = client_stream(hub, race, None)
            parser = SSEParser()
            assert orjson.loads((await _read(gen, parser, 1))[0].data)["version"] == 1
            for v in range(2, 22):  # 20 telemetry-only snapshots in about a second
                await asyncio.to_thread(writer.write, [BoardUpdate(replace(board, version=v, reason="telemetry"),
                                                                   None, "x")])
                await asyncio.sleep(0.05)
            got: list[int] = []
            async with asyncio.timeout(5):
                while not got or got[-1] != 21:
                    got += [orjson.loads(e.data)["version"] for e in parser.feed(await anext(gen))]
            assert len(got) <= 5, got  # thinned ...
            assert got == sorted(got)
            # ... and a timing-line snapshot goes out at once
            await asyncio.to_thread(writer.write, [BoardUpdate(replace(board, version=22, reason="timing"), None,
                                                               "x")])
            async with asyncio.timeout(0.5):
                (e,) = await _read(gen, parser, 1)
            assert orjson.loads(e.data)["version"] == 22
            await gen.aclose()
        finally:
            await hub.close()
            await client.aclose()

    try:
        asyncio.run(scenario())
    finally:
        redis_client.hdel(RACES_KEY, race)
        writer.close()


def test_500_clients_churning_through_the_whole_app_leave_nothing_behind(redis_url: str, redis_client: redis.Redis,
                                                                         unique_race_id: str) -> None:
    """500 SSE clients connect in waves through every middleware (edge, metrics, request ids) while the
    race is written, each reads its first frame and hangs up: afterwards no subscriber, no channel
    and no connected-client count is left."""
    import threading

    import httpx

    from infra.bench.harness import serve_in_thread
    from schemas.settings import Settings
    from serving.app import ServingOptions, create_app
    from serving.replay import write_session

    session, outputs = race_outputs(unique_race_id, seed=2, laps=3)
    writer = RedisWriter(redis_url)
    write_session(writer, session)
    list(play(writer, outputs[:20]))
    app = create_app(Settings(redis_url=redis_url),  # type: ignore[call-arg]
                     ServingOptions(rate_limit_per_s=0, sse_ping_s=1, sse_block_ms=200, sse_linger_s=0.3))
    stop = threading.Event()

    def keep_writing() -> None:
        for _ in play(writer, outputs[20:], speed=50):
            if stop.is_set():
                return

    async def one(client: httpx.AsyncClient, url: str) -> bool:
        async with client.stream("GET", f"{url}/api/races/{unique_race_id}/stream") as r:
            parser = SSEParser()
            async for chunk in r.aiter_raw():
                if parser.feed(chunk):
                    return r.status_code == 200
        return False

    async def churn(url: str) -> list[bool]:
        results: list[bool] = []
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=20, limits=limits) as client:
            for _wave in range(5):
                results += await asyncio.gather(*(one(client, url) for _ in range(100)))
        return results

    try:
        with serve_in_thread(app) as url:
            writing = threading.Thread(target=keep_writing, daemon=True)
            writing.start()
            results = asyncio.run(churn(url))
            stop.set()
            writing.join(10)
            hub = app.state.hub
            for _ in range(100):  # the server notices each hang-up, then the channel lingers 0.3 s
                if hub.clients == 0 and not hub.channels:
                    break
                asyncio.run(asyncio.sleep(0.1))
            gauge = httpx.get(f"{url}/metrics").text
        assert results.count(True) == 500
        assert hub.clients == 0 and not hub.channels
        assert "racewire_sse_clients 0.0" in gauge
        assert "racewire_sse_connections_total 500.0" in gauge
    finally:
        stop.set()
        writer.client.hdel(RACES_KEY, unique_race_id)


def test_an_event_written_again_under_a_new_id_is_not_sent_twice(redis_url: str, redis_client: redis.Redis,
                                                                unique_race_id: str) -> None:
    """A race restored after Redis lost it may get its events back under new stream ids (when the
    original ids were lost too): the channel does not broadcast an event id it already sent."""
    race = unique_race_id
    writer = RedisWriter(redis_url)
    writer.write([_event(race, 0)])
    redis_client.hset(RACES_KEY, race, b"{}")

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        hub = Hub(client, block_ms=200)
        try:
            gen = client_stream(hub, race, None)
            parser = SSEParser()
            first = asyncio.ensure_future(_read(gen, parser, 1))
            await asyncio.sleep(0.3)
            await asyncio.to_thread(writer.write, [_event(race, 1)])
            assert [orjson.loads(e.data)["event_id"] for e in await first] == [f"{race}:ev:1"]
            # the event it sent, appended again under a new id
            redis_client.xadd(events_key(race), {"event_id": f"{race}:ev:1", "type": "PIT_STOP",
                                                        "json": orjson.dumps(_event(race, 1).to_dict())})
            await asyncio.to_thread(writer.write, [_event(race, 2)])
            got = await _read(gen, parser, 1)
            assert [orjson.loads(e.data)["event_id"] for e in got] == [f"{race}:ev:2"]
            await gen.aclose()
        finally:
            await hub.close()
            await client.aclose()

    try:
        asyncio.run(scenario())
    finally:
        redis_client.hdel(RACES_KEY, race)
        writer.close()
