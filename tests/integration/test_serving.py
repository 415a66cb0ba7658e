"""The serving layer against real Redis holding the race dataflow's real output.

A simulated race goes through the dataflow's race logic (``serving.replay``) and is written with
the Redis sink's own ``RedisWriter``; the app runs under a real uvicorn in a thread and is read
over HTTP (REST and SSE) like a browser would.
"""

from __future__ import annotations

import contextlib
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from dataflows.connectors.redis_sink import RedisWriter
from infra.bench.harness import serve_in_thread
from schemas.model import Commentary, RaceEvent
from schemas.redis_layout import RACES_KEY, events_key
from schemas.settings import Settings
from serving.app import ServingOptions, create_app
from serving.replay import Output, play, race_outputs, write_session
from serving.sse.framing import SSEEvent, SSEParser

pytestmark = pytest.mark.integration

API_KEY = "test-key-123"
SEED, LAPS = 5, 3


@pytest.fixture(scope="module")
def recorded_race() -> tuple[Any, list[Output]]:
    """One simulated race's outputs (the same for every test: ids differ per test)."""
    return race_outputs("template", SEED, LAPS)


def _for_race(outputs: list[Output], race_id: str) -> list[Output]:
    """The recorded outputs re-addressed to ``race_id``."""
    out = []
    for o in outputs:
        item = o.item
        if isinstance(item, RaceEvent):
            item = replace(item, race_id=race_id, event_id=item.event_id.replace("template", race_id))
        else:
            board = replace(item.board, race_id=race_id)
            item = type(item)(board, item.positions, item.name)
        out.append(Output(o.ts_ms, item))
    return out


@pytest.fixture
def race(recorded_race: tuple[Any, list[Output]], unique_race_id: str, redis_url: str,
         redis_client: redis.Redis) -> Iterator[tuple[Any, list[Output], RedisWriter]]:
    session, outputs = recorded_race
    writer = RedisWriter(redis_url)
    write_session(writer, replace(session, race_id=unique_race_id))
    try:
        yield session, _for_race(outputs, unique_race_id), writer
    finally:
        writer.client.hdel(RACES_KEY, unique_race_id)
        writer.close()


def _settings(redis_url: str, **kw: Any) -> Settings:
    return Settings(redis_url=redis_url, api_key=API_KEY, **kw)  # type: ignore[arg-type]


FAST = ServingOptions(rate_limit_per_s=0, sse_ping_s=1, sse_block_ms=500, sse_linger_s=0.5)


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[str]:
    app = create_app(_settings(redis_url), FAST)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=10) as client:
        yield client


def write(writer: RedisWriter, outputs: list[Output]) -> None:
    for _ in play(writer, outputs):
        pass


def boards(outputs: list[Output]) -> list[Any]:
    return [o.item.board for o in outputs if not isinstance(o.item, RaceEvent)]


def events(outputs: list[Output]) -> list[RaceEvent]:
    return [o.item for o in outputs if isinstance(o.item, RaceEvent)]


# ------------------------------------------------------------------------------------------ REST


def test_races_and_leaderboard(http: httpx.Client, race: Any, unique_race_id: str) -> None:
    _, outputs, writer = race
    write(writer, outputs[:40])
    last = boards(outputs[:40])[-1]
    assert not last.finished

    listed = {r["race_id"]: r for r in http.get("/api/races").json()["races"]}
    assert listed[unique_race_id]["status"] == "live"
    assert listed[unique_race_id]["version"] == last.version

    r = http.get(f"/api/races/{unique_race_id}/leaderboard")
    assert r.status_code == 200
    doc = r.json()
    assert {k: v for k, v in doc.items() if k != "positions"} == orjson.loads(orjson.dumps(last.to_dict()))
    assert len(doc["rows"]) == 20
    assert set(doc["positions"]) == {str(row.driver_number) for row in last.rows}


def test_hero_fastest_lap_after_the_flag(http: httpx.Client, race: Any, unique_race_id: str) -> None:
    _, outputs, writer = race
    write(writer, outputs[:20])
    early = http.get(f"/api/races/{unique_race_id}/hero").json()
    assert early == {"race_id": unique_race_id, "hero": None, "final": False}

    write(writer, outputs)
    final = boards(outputs)[-1]
    assert final.final and final.hero is not None
    hero = http.get(f"/api/races/{unique_race_id}/hero").json()
    assert hero["final"] is True
    assert hero["hero"] == final.hero.to_dict()
    fastest = http.get(f"/api/races/{unique_race_id}/fastest-lap").json()
    assert fastest["fastest_lap"] == final.fastest_lap.to_dict()
    listed = {r["race_id"]: r for r in http.get("/api/races").json()["races"]}
    assert listed[unique_race_id]["status"] == "finished"


def test_events_paging_and_filter(http: httpx.Client, race: Any, unique_race_id: str) -> None:
    _, outputs, writer = race
    write(writer, outputs)
    expected = [orjson.loads(orjson.dumps(e.to_dict())) for e in events(outputs)]

    got: list[dict[str, Any]] = []
    after = "0-0"
    while True:
        page = http.get(f"/api/races/{unique_race_id}/events", params={"after": after, "limit": 7}).json()
        if not page["events"]:
            break
        got += page["events"]
        after = page["next"]
    assert [g["data"] for g in got] == expected
    ids = [tuple(map(int, g["id"].split("-"))) for g in got]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    latest = http.get(f"/api/races/{unique_race_id}/events", params={"limit": 3}).json()["events"]
    assert [e["id"] for e in latest] == [g["id"] for g in got[-3:]]
    overtakes = http.get(f"/api/races/{unique_race_id}/events",
                         params={"after": "0-0", "limit": 1000, "type": "OVERTAKE"}).json()["events"]
    assert overtakes and all(e["type"] == "OVERTAKE" for e in overtakes)
    assert len(overtakes) == sum(1 for e in expected if e["type"] == "OVERTAKE")


def test_drivers(http: httpx.Client, race: Any, unique_race_id: str) -> None:
    session, outputs, writer = race
    write(writer, outputs[:10])
    doc = http.get(f"/api/races/{unique_race_id}/drivers").json()
    assert {d["code"] for d in doc["drivers"]} == {d.code for d in session.drivers}
    assert len(doc["track_outline"]) == len(session.track_outline) > 10
    assert doc["total_laps"] == LAPS and doc["start_time"].endswith("+00:00")
    everyone = http.get("/api/drivers").json()["drivers"]
    mine = [d for d in everyone if unique_race_id in d["races"]]
    assert len(mine) == 20 and all(d["team_colour"] for d in mine)


def test_unknown_race_is_404_everywhere(http: httpx.Client, race: Any, unique_race_id: str) -> None:
    _, outputs, writer = race
    write(writer, outputs[:5])
    for path in ("leaderboard", "hero", "fastest-lap", "events", "drivers", "stream"):
        r = http.get(f"/api/races/no-such-race/{path}")
        assert r.status_code == 404, path
        detail = r.json()["detail"]
        assert detail.startswith("race 'no-such-race' not found; known races: ")
        assert unique_race_id in detail or "more)" in detail


@pytest.mark.parametrize(("path", "params", "headers", "field"), [
    ("events", {"after": "yesterday"}, {}, "after"),
    ("events", {"limit": 0}, {}, "limit"),
    ("events", {"limit": "many"}, {}, "limit"),
    ("stream", {}, {"Last-Event-ID": "bogus"}, "Last-Event-ID"),
    ("stream", {"after": "12-x"}, {}, "after"),
])
def test_bad_input_is_422_naming_the_field(http: httpx.Client, race: Any, unique_race_id: str, path: str,
                                           params: dict[str, Any], headers: dict[str, str], field: str) -> None:
    _, outputs, writer = race
    write(writer, outputs[:5])
    r = http.get(f"/api/races/{unique_race_id}/{path}", params=params, headers=headers)
    assert r.status_code == 422, r.text
    assert any(d["loc"][-1] == field for d in r.json()["detail"]), r.text


def test_bad_race_id_is_422(http: httpx.Client) -> None:
    r = http.get("/api/races/%20bad%20id/leaderboard")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "race_id"]


def test_health_and_metrics(http: httpx.Client) -> None:
    health = http.get("/api/health").json()
    assert health["status"] == "ok"
    assert health["dependencies"]["redis"]["ok"] is True
    assert health["dependencies"]["kafka"] == {"ok": None, "configured": False}
    text = http.get("/metrics").text
    assert "racewire_http_requests_total" in text and "racewire_sse_clients" in text
    assert 'route="/api/health"' in text


def test_openapi_documents_every_endpoint(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    for p in ("/api/races", "/api/races/{race_id}/leaderboard", "/api/races/{race_id}/hero",
              "/api/races/{race_id}/fastest-lap", "/api/races/{race_id}/events", "/api/races/{race_id}/drivers",
              "/api/races/{race_id}/stream", "/api/drivers", "/api/health", "/api/events", "/api/simulations",
              "/api/simulations/{sim_id}", "/metrics"):
        assert p in paths, p


def test_page_and_docs_load_nothing_external(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200 and "racewire" in page.text
    assert http.get("/app.js").status_code == 200 and http.get("/app.css").status_code == 200
    pytest.importorskip("fastapi_offline", reason="fastapi-offline not installed: /docs uses FastAPI's CDN")
    docs = http.get("/docs").text
    assert "/docs-static/swagger-ui-bundle.js" in docs and "cdn." not in docs
    assert http.get("/docs-static/swagger-ui-bundle.js").status_code == 200


def test_rate_limit_per_client(redis_url: str) -> None:
    app = create_app(_settings(redis_url), replace(FAST, rate_limit_per_s=1, rate_limit_burst=3))
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as http:
        codes = [http.get("/api/races").status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        r = http.get("/api/races")
        assert int(r.headers["Retry-After"]) >= 1 and "rate limit" in r.json()["detail"]
        assert http.get("/api/health").status_code == 200  # ops endpoints are not limited


# ------------------------------------------------------------------------------------------ ingest


LAP = {"event_id": "x:lap:1:1", "race_id": "x", "driver_number": 1, "lap": 1, "crossing_ms": 95000,
       "lap_time_ms": 95000, "compound": "SOFT", "tyre_age": 1}


def test_ingest_needs_the_api_key(http: httpx.Client) -> None:
    body = {"topic": "f1.timing.lap", "record": LAP}
    r = http.post("/api/events", json=body)
    assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
    assert http.post("/api/events", json=body, headers={"X-API-Key": "wrong"}).status_code == 401


@pytest.mark.parametrize(("body", "loc"), [
    ({"topic": "f1.timing.lap", "record": {**LAP, "driver_number": "one"}}, ["body", "record", "driver_number"]),
    ({"topic": "f1.timing.lap", "record": {k: v for k, v in LAP.items() if k != "crossing_ms"}},
     ["body", "record", "crossing_ms"]),
    ({"topic": "f1.timing.lap", "record": {**LAP, "track_status": "PURPLE"}}, ["body", "record", "track_status"]),
    ({"topic": "f1.timing.lap", "record": {**LAP, "tyre_age": 1.5}}, ["body", "record", "tyre_age"]),
    ({"topic": "f1.timing.lap", "record": {**LAP, "colour": "red"}}, ["body", "record", "colour"]),
    ({"topic": "f1.nope", "record": LAP}, ["body", "topic"]),
    ([{"topic": "f1.timing.lap", "record": LAP}, {"topic": "f1.timing.lap", "record": {**LAP, "lap": None}}],
     ["body", 1, "record", "lap"]),
    ({"record": LAP}, ["body", "topic"]),
])
def test_ingest_422_names_the_field(http: httpx.Client, body: Any, loc: list[Any]) -> None:
    r = http.post("/api/events", json=body, headers={"X-API-Key": API_KEY})
    assert r.status_code == 422, r.text
    assert loc in [d["loc"] for d in r.json()["detail"]], r.text


def test_ingest_without_kafka_is_503(http: httpx.Client) -> None:
    r = http.post("/api/events", json={"topic": "f1.timing.lap", "record": LAP}, headers={"X-API-Key": API_KEY})
    assert r.status_code == 503 and "RACEWIRE_KAFKA_BOOTSTRAP" in r.json()["detail"]


@pytest.mark.slow
def test_ingest_produces_avro_to_kafka(redis_url: str, kafka_bootstrap: str, registry_url: str,
                                       unique_race_id: str) -> None:
    from confluent_kafka import Consumer, TopicPartition

    from schemas.codec import Codec, make_registry_client

    settings = _settings(redis_url, kafka_bootstrap=kafka_bootstrap, schema_registry_url=registry_url)
    lap = {**LAP, "race_id": unique_race_id, "event_id": f"{unique_race_id}:lap:1:1"}
    control = {"event_id": f"{unique_race_id}:rc:1", "race_id": unique_race_id, "ts_ms": 10,
               "kind": "TRACK_STATUS", "track_status": "SC", "message": "safety car"}
    with serve_in_thread(create_app(settings, FAST)) as url, httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("/api/events", headers={"X-API-Key": API_KEY},
                      json=[{"topic": "f1.timing.lap", "record": lap}, {"topic": "f1.race.control", "record": control}])
        assert r.status_code == 202, r.text
        results = r.json()["results"]
        assert [x["topic"] for x in results] == ["f1.timing.lap", "f1.race.control"]
        health = http.get("/api/health").json()
        assert health["dependencies"]["kafka"]["ok"] is True

    codec = Codec(make_registry_client(registry_url))
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"t-{unique_race_id}",
                         "enable.auto.commit": False})
    got = {}
    try:
        for res in results:
            consumer.assign([TopicPartition(res["topic"], res["partition"], res["offset"])])
            deadline = time.monotonic() + 20
            while res["topic"] not in got and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    got[res["topic"]] = (msg.key().decode(), codec.decode(msg.value())[1])
    finally:
        consumer.close()
    assert got["f1.timing.lap"][0] == f"{unique_race_id}:1"
    assert got["f1.timing.lap"][1]["lap_time_ms"] == 95000
    assert got["f1.race.control"][0] == unique_race_id
    assert got["f1.race.control"][1]["track_status"] == "SC"


# ------------------------------------------------------------------------------------------ simulations


FAKE_SIMULATOR = textwrap.dedent("""
    import sys, time
    print("simulate", " ".join(sys.argv[1:]), flush=True)
    time.sleep(60)
""")


def test_simulations_start_status_stop(redis_url: str, tmp_path: Path) -> None:
    script = tmp_path / "fake_simulate.py"
    script.write_text(FAKE_SIMULATOR)
    settings = _settings(redis_url, kafka_bootstrap="127.0.0.1:1", schema_registry_url="mock://sim")
    app = create_app(settings, replace(FAST, simulate_command=(sys.executable, str(script))))
    key = {"X-API-Key": API_KEY}
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        body = {"seed": 7, "laps": 5, "speed": 20, "race_id": "sim-test-1", "follow": "ver"}
        assert http.post("/api/simulations", json=body).status_code == 401
        assert http.post("/api/simulations", json={**body, "laps": 0}, headers=key).json()["detail"][0]["loc"] == [
            "body", "laps"]
        r = http.post("/api/simulations", json=body, headers=key)
        assert r.status_code == 201, r.text
        sim = r.json()
        assert sim["state"] == "running" and sim["watch_url"] == "/?race=sim-test-1&follow=VER"
        assert http.post("/api/simulations", json=body, headers=key).status_code == 409
        deadline = time.monotonic() + 10
        while not http.get("/api/simulations/sim-test-1", headers=key).json()["output_tail"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        tail = http.get("/api/simulations/sim-test-1", headers=key).json()["output_tail"]
        assert tail == ["simulate --race-id sim-test-1 --seed 7 --laps 5 --speed 20.0"]
        assert http.get("/api/simulations/nope", headers=key).status_code == 404
        stopped = http.delete("/api/simulations/sim-test-1", headers=key).json()
        assert stopped["state"] == "stopped" and stopped["returncode"] is not None


def test_simulations_without_kafka_are_503(http: httpx.Client) -> None:
    r = http.post("/api/simulations", json={"seed": 1}, headers={"X-API-Key": API_KEY})
    assert r.status_code == 503 and "RACEWIRE_KAFKA_BOOTSTRAP" in r.json()["detail"]


# ------------------------------------------------------------------------------------------ SSE


class SSE:
    """A streaming SSE client over httpx: read events until a condition, then disconnect."""

    def __init__(self, base: str, race_id: str, last_event_id: str | None = None, query: str = "") -> None:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self._cm = httpx.stream("GET", f"{base}/api/races/{race_id}/stream{query}", headers=headers,
                                timeout=httpx.Timeout(10, read=10))
        self.response = self._cm.__enter__()
        assert self.response.status_code == 200
        assert self.response.headers["content-type"].startswith("text/event-stream")
        self.parser = SSEParser()
        self._chunks = self.response.iter_raw()
        self.pending: list[SSEEvent] = []

    def next(self) -> SSEEvent:
        while not self.pending:
            self.pending = self.parser.feed(next(self._chunks))
        return self.pending.pop(0)

    def take(self, n: int) -> list[SSEEvent]:
        return [self.next() for _ in range(n)]

    def until(self, pred: Any, limit: int = 10_000) -> list[SSEEvent]:
        out = []
        for _ in range(limit):
            out.append(self.next())
            if pred(out[-1]):
                return out
        raise AssertionError("condition not met")

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


@contextlib.contextmanager
def sse(base: str, race_id: str, last_event_id: str | None = None, query: str = "") -> Iterator[SSE]:
    client = SSE(base, race_id, last_event_id, query)
    try:
        yield client
    finally:
        client.close()


def _event_ids(evs: list[SSEEvent]) -> list[str]:
    return [orjson.loads(e.data)["event_id"] for e in evs if e.event == "event"]


def test_stream_starts_with_the_leaderboard_then_goes_live(server: str, race: Any, unique_race_id: str) -> None:
    _, outputs, writer = race
    write(writer, outputs[:40])
    with sse(server, unique_race_id) as client:
        first = client.next()
        assert first.event == "leaderboard"
        assert orjson.loads(first.data)["version"] == boards(outputs[:40])[-1].version
        assert first.id is not None and first.id.endswith(f".v{boards(outputs[:40])[-1].version}")
        write(writer, outputs[40:80])
        want = _event_ids_of(events(outputs[40:80]))
        last_version = boards(outputs[:80])[-1].version
        got = client.until(lambda e: e.event == "event" and orjson.loads(e.data)["event_id"] == want[-1])
        if not any(e.event == "leaderboard" and orjson.loads(e.data)["version"] == last_version for e in got):
            # snapshots read in the same batch as events follow them (coalesced to the newest)
            got += client.until(lambda e: e.event == "leaderboard" and orjson.loads(e.data)["version"] == last_version)
        assert _event_ids(got) == want
        for e in got:
            assert e.id is not None
            if e.event == "event":
                assert "." not in e.id  # the stream entry id itself
        versions = [orjson.loads(e.data)["version"] for e in got if e.event == "leaderboard"]
        assert versions == sorted(set(versions)) and versions


def _event_ids_of(evs: list[RaceEvent]) -> list[str]:
    return [e.event_id for e in evs]


def test_resume_with_last_event_id_gets_exactly_the_missed_events(server: str, race: Any,
                                                                  unique_race_id: str) -> None:
    _, outputs, writer = race
    evs = events(outputs)
    assert len(evs) > 40
    write(writer, outputs[:10])
    with sse(server, unique_race_id) as client:
        client.next()  # the leaderboard
        cut = next(i for i, o in enumerate(outputs) if o.item is evs[20]) + 1
        write(writer, outputs[10:cut])
        seen = client.until(lambda e: e.event == "event" and orjson.loads(e.data)["event_id"] == evs[20].event_id)
        last_id = client.parser.last_id
    assert last_id is not None
    # disconnected mid-race: the race goes on
    write(writer, outputs[cut:])
    missed = [e.event_id for e in evs[21:]]
    with sse(server, unique_race_id, last_event_id=last_id) as client:
        got = client.until(lambda e: e.event == "leaderboard")
        assert _event_ids(got) == missed  # exactly the missed ones, in order, nothing twice
        assert orjson.loads(got[-1].data)["final"] is True
        ids = [tuple(map(int, e.id.split(".")[0].split("-"))) for e in got if e.id]
        assert ids == sorted(ids)
    assert set(_event_ids(seen)).isdisjoint(missed)


def test_resume_after_a_leaderboard_id_sends_no_duplicate(server: str, race: Any, unique_race_id: str) -> None:
    _, outputs, writer = race
    write(writer, outputs[:30])
    with sse(server, unique_race_id) as client:
        lb = client.next()
    # nothing changed: a reconnect with the leaderboard's id gets nothing but pings
    with sse(server, unique_race_id, last_event_id=lb.id) as client:
        evs = events(outputs[30:60])
        write(writer, outputs[30:60])
        got = client.until(lambda e: e.event == "event" and orjson.loads(e.data)["event_id"] == evs[-1].event_id)
        assert _event_ids(got) == [e.event_id for e in evs]
        assert not any(e.event == "leaderboard" and e.data == lb.data for e in got)


def test_commentary_lines_are_streamed_as_commentary(server: str, race: Any, unique_race_id: str,
                                                     redis_client: redis.Redis) -> None:
    _, outputs, writer = race
    write(writer, outputs[:10])
    line = Commentary(f"{unique_race_id}:c:1", unique_race_id, 12_000, 1, "Lights out and away we go!", "x", 2)
    with sse(server, unique_race_id) as client:
        client.next()
        redis_client.xadd(events_key(unique_race_id),
                          {"event_id": line.event_id, "type": "COMMENTARY", "json": orjson.dumps(line.to_dict())})
        got = client.until(lambda e: e.event == "commentary")
        assert orjson.loads(got[-1].data)["text"] == "Lights out and away we go!"


def test_many_clients_share_one_reader(server: str, http: httpx.Client, race: Any, unique_race_id: str) -> None:
    _, outputs, writer = race
    write(writer, outputs[:10])
    clients = [SSE(server, unique_race_id) for _ in range(12)]
    try:
        for c in clients:
            assert c.next().event == "leaderboard"
        health = http.get("/api/health").json()
        assert health["sse_clients"] >= 12
        metrics = http.get("/metrics").text
        assert "racewire_sse_channels" in metrics
        write(writer, outputs[10:50])
        want = [e.event_id for e in events(outputs[10:50])]
        for c in clients:
            got = c.until(lambda e: e.event == "event" and orjson.loads(e.data)["event_id"] == want[-1])
            assert _event_ids(got) == want
    finally:
        for c in clients:
            c.close()


def test_keepalive_pings_are_comments(server: str, race: Any, unique_race_id: str) -> None:
    _, outputs, writer = race
    write(writer, outputs[:5])
    with sse(server, unique_race_id) as client:
        client.next()
        deadline = time.monotonic() + 5
        while client.parser.comments == 0 and time.monotonic() < deadline:
            client.parser.feed(next(client._chunks))
        assert client.parser.comments >= 1
        assert client.pending == []  # pings are not data events


def test_shutdown_ends_open_streams(redis_url: str, race: Any, unique_race_id: str) -> None:
    _, outputs, writer = race
    write(writer, outputs[:5])
    app = create_app(_settings(redis_url), replace(FAST, sse_ping_s=15))
    with serve_in_thread(app) as url:
        client = SSE(url, unique_race_id)
        assert client.next().event == "leaderboard"
        started = time.monotonic()
    # the server has stopped: the stream ended instead of holding shutdown to its grace timeout
    assert time.monotonic() - started < 4
    with pytest.raises((StopIteration, httpx.HTTPError)):
        while True:
            client.next()
    client.close()


def _apply_delta(board: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    assert board["version"] == delta["base"]
    out = {**board, **{k: v for k, v in delta.items()
                       if k not in ("rows", "order", "positions", "positions_removed", "base")}}
    rows = {r["driver_number"]: r for r in board["rows"]}
    for num, changed in delta["rows"].items():
        rows[int(num)] = {**rows.get(int(num), {}), **changed}
    out["rows"] = [rows[n] for n in delta.get("order") or [r["driver_number"] for r in board["rows"]]]
    out["positions"] = {**board.get("positions", {}), **delta["positions"]}
    return out


def test_delta_stream_rebuilds_every_leaderboard(server: str, http: httpx.Client, race: Any,
                                                 unique_race_id: str) -> None:
    _, outputs, writer = race
    write(writer, outputs[:10])
    with sse(server, unique_race_id, query="?delta=1") as client:
        first = client.next()
        assert first.event == "leaderboard"
        board = orjson.loads(first.data)
        write(writer, outputs[10:70])
        final_version = boards(outputs[:70])[-1].version
        deltas = 0
        while board["version"] < final_version:
            e = client.next()
            if e.event == "leaderboard-delta":
                d = orjson.loads(e.data)
                assert len(e.data) < len(orjson.dumps(board)) / 2
                board = _apply_delta(board, d)
                assert e.id is not None and e.id.endswith(f".v{board['version']}")
                deltas += 1
            elif e.event == "leaderboard":
                board = orjson.loads(e.data)
        assert deltas > 10
    assert board == http.get(f"/api/races/{unique_race_id}/leaderboard").json()
