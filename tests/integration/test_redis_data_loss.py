"""Finding 5 of issue 11: Redis loses its data mid-race (FLUSHALL) while the real dataflow runs.

Every live race must come back whole (state, every event once with the event-id index, the lap
chart, stints, strategy calls and their history, the session, the ``races`` entry), and an SSE
client connected across the flush must not receive any event twice. The truth is the flow's own
Kafka output topics, which the flush does not touch, and the produced lap chart.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from infra.bench.harness import serve_in_thread
from infra.flow_cli import flow_process
from infra.services import EmbeddedKafka, EmbeddedRedis, free_port
from infra.topics import create_topics
from schemas.codec import Codec, make_registry_client
from schemas.model import Commentary, RaceEvent, Recommendation, Stint
from schemas.redis_layout import (
    RACES_KEY,
    lapchart_key,
    session_document,
    session_key,
    stints_key,
    strategy_history_key,
    strategy_key,
)
from schemas.settings import Settings
from serving.app import ServingOptions, create_app
from serving.sse.framing import SSEParser
from tests.integration.live_race import (
    check_against_truth,
    output_topic,
    produce,
    simulate,
    state,
    stream_entries,
    wait_for,
    wait_settled,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LAPS = 12
FLUSH_AT_LAP = 5
FAST = ServingOptions(rate_limit_per_s=0, sse_ping_s=1, sse_block_ms=300, sse_linger_s=0.5)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with EmbeddedKafka(free_port(), tmp_path_factory.mktemp("kafka")) as kafka:
        create_topics(kafka.bootstrap, 4)
        yield kafka.bootstrap


class SseClient(threading.Thread):
    """Reads one race's SSE stream until stopped; keeps every frame."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.frames: list[Any] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        parser = SSEParser()
        try:
            with httpx.stream("GET", self.url, timeout=httpx.Timeout(10, read=5)) as r:
                assert r.status_code == 200, r.read()
                for chunk in r.iter_raw():
                    self.frames += parser.feed(chunk)
                    if self.stop.is_set():
                        return
        except BaseException as e:  # reported by the test
            if not self.stop.is_set():
                self.error = e


def _hash_json(client: redis.Redis, key: str) -> dict[str, Any]:
    return {k.decode(): json.loads(v) for k, v in client.hgetall(key).items()}


def test_flushed_redis_gets_every_live_race_back_whole(broker: str, registry_url: str, tmp_path: Path) -> None:
    race = simulate(f"flush-{uuid.uuid4().hex[:6]}", LAPS)
    rid = race.race_id
    codec = Codec(make_registry_client(registry_url))
    split = race.split_at_lap(FLUSH_AT_LAP)
    server = EmbeddedRedis(free_port(), tmp_path / "redis").start()
    client = redis.Redis.from_url(server.url)
    settings = Settings(redis_url=server.url, api_key="test-key-123")  # type: ignore[arg-type]
    sse: SseClient | None = None
    try:
        produce(broker, codec, race.records[:split])
        with flow_process(broker, server.url, registry_url) as proc, \
                serve_in_thread(create_app(settings, FAST)) as url:
            wait_for(f"lap {FLUSH_AT_LAP} in Redis",
                     lambda: (s := state(client, rid)) is not None and s["lap"] >= FLUSH_AT_LAP, proc)
            sse = SseClient(f"{url}/api/races/{rid}/stream")
            sse.start()
            wait_for("the SSE client's first frame", lambda: sse is not None and sse.frames, proc, timeout_s=20)
            client.flushall()  # Redis loses everything mid-race
            produce(broker, codec, race.records[split:])
            doc = wait_settled(client, rid, proc)
            check_against_truth(doc, race)

            # every event once, in the stream and in the event-id index
            entries = stream_entries(client, rid)
            in_stream = Counter(e["event_id"] for _i, e in entries)
            assert max(in_stream.values()) == 1, "an event is in the stream twice"
            published = {e.event_id for e in output_topic(broker, "f1.race.events", codec, rid)
                         if isinstance(e, RaceEvent)}
            published |= {c.event_id for c in output_topic(broker, "f1.race.commentary", codec, rid)
                          if isinstance(c, Commentary)}
            assert set(in_stream) == published
            assert [i for i, _e in entries] == sorted((i for i, _e in entries),
                                                      key=lambda s: tuple(int(p) for p in s.split("-")))

            # the lap chart, every lap
            chart = {int(k): json.loads(v) for k, v in client.hgetall(lapchart_key(rid)).items()}
            assert chart == race.lap_chart

            # stints: the newest version of each; strategy: each car's latest call and every call
            stints: dict[str, tuple[int, dict[str, Any]]] = {}
            for s in output_topic(broker, "f1.driver.stints", codec, rid):
                if isinstance(s, Stint):
                    key, order = f"{s.driver_number}:{s.stint}", 2 * s.end_lap + (not s.open)
                    if key not in stints or order >= stints[key][0]:
                        stints[key] = (order, s.to_dict())
            assert stints and _hash_json(client, stints_key(rid)) == {k: v for k, (_o, v) in stints.items()}
            calls = [c for c in output_topic(broker, "f1.strategy.recommendations", codec, rid)
                     if isinstance(c, Recommendation)]
            assert calls, "no strategy calls were published"
            history = {f"{c.lap}:{c.driver_number}": c.to_dict() for c in calls}
            assert _hash_json(client, strategy_history_key(rid)) == history
            latest: dict[str, Recommendation] = {}
            for c in calls:
                if str(c.driver_number) not in latest or c.lap >= latest[str(c.driver_number)].lap:
                    latest[str(c.driver_number)] = c
            assert _hash_json(client, strategy_key(rid)) == {k: c.to_dict() for k, c in latest.items()}

            # the session and the race list
            assert json.loads(client.get(session_key(rid)) or b"null") == json.loads(
                orjson.dumps(session_document(race.session)))
            summary = json.loads(client.hget(RACES_KEY, rid) or b"{}")
            assert (summary.get("status"), summary.get("version")) == ("finished", doc["version"])

            # the SSE client connected across the flush got no event twice
            sse.stop.set()
            assert sse.error is None, sse.error
            got = [json.loads(f.data)["event_id"] for f in sse.frames if f.event in ("event", "commentary")]
            assert got, "the SSE client received no events"
            twice = [e for e, n in Counter(got).items() if n > 1]
            assert not twice, f"the SSE client received {len(twice)} events twice, e.g. {twice[:3]}"
            assert proc.poll() is None
    finally:
        if sse is not None:
            sse.stop.set()
        client.close()
        server.stop()
