"""A whole simulated race through the real broker, the real dataflow and Redis.

One 20-car, 50-lap race (with malformed records of every kind mixed in) is produced at max speed;
the race dataflow runs as its own process, first with one worker, then with two worker processes
writing to another Redis database. Checked: classification, fastest lap and last-lap hero in Redis
and on ``f1.race.events`` equal the simulator's ground truth; every malformed record is on
``f1.deadletter`` with its reason; two workers give the same results as one.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from dataflows.race.state import applied_of
from infra.flow_cli import flow_process
from schemas.codec import Codec, make_registry_client
from schemas.model import Lap, Telemetry
from schemas.redis_layout import (
    RACES_KEY,
    events_key,
    lapchart_key,
    leaderboard_key,
    race_keys_pattern,
    state_key,
    version_key,
)
from simulator.race import RaceSimulator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LAPS = 50
FLOW_TIMEOUT_S = 240


def _with_db(url: str, db: int) -> str:
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    return f"{base}/{db}"


def _flow(bootstrap: str, redis_url: str, registry_url: str, workers: int,
          database_url: str | None = None) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    return flow_process(bootstrap, redis_url, registry_url, workers, database_url)


def _wait_final(client: redis.Redis, race_id: str, proc: subprocess.Popen[bytes], records: int) -> dict[str, Any]:
    """The race's state once the flow has applied all ``records`` valid input records."""
    deadline = time.monotonic() + FLOW_TIMEOUT_S
    while time.monotonic() < deadline:
        raw = client.get(state_key(race_id))
        if raw is not None:
            doc = json.loads(raw)
            if doc["final"] and applied_of(doc["version"]) >= records:
                assert applied_of(doc["version"]) == records
                time.sleep(1.0)  # let the last events land
                return json.loads(client.get(state_key(race_id)) or b"{}")
        assert proc.poll() is None, f"dataflow exited with {proc.returncode}"
        time.sleep(0.2)
    raise AssertionError(f"race {race_id} not final in Redis after {FLOW_TIMEOUT_S} s")


def _stream_events(client: redis.Redis, race_id: str) -> list[dict[str, Any]]:
    return [{**json.loads(fields[b"json"]), "type": fields[b"type"].decode()}
            for _id, fields in client.xrange(events_key(race_id))]


def _bad_records(codec: Codec, race_id: str, real_lap: Lap) -> list[tuple[str, bytes, bytes, str]]:
    """(topic, key, value, expected error_type) for every kind of malformed record."""
    good_tel = Telemetry(f"{race_id}:tel:bad", race_id, real_lap.driver_number, 1000, 1, 0.1, 0, 0, 100.0,
                         9000, 3, 50.0, False, False)
    unknown = Telemetry(f"{race_id}:tel:99", race_id, 99, 1000, 1, 0.1, 0, 0, 100.0, 9000, 3, 50.0, False, False)
    negative = Lap(f"{race_id}:lap:neg", race_id, real_lap.driver_number, 2, 180_000, -1)
    repeat = Lap(f"{race_id}:lap:again", race_id, real_lap.driver_number, 1, real_lap.crossing_ms + 5,
                 real_lap.lap_time_ms)
    raw_tel = codec.encode(Telemetry.TOPIC, good_tel)
    key = f"{race_id}:{real_lap.driver_number}".encode()
    return [
        ("f1.telemetry.car", key, b"\x07not avro at all", "DECODE"),
        ("f1.telemetry.car", key, b"\x00\x00\x01\x86\xa0" + raw_tel[5:], "UNKNOWN_SCHEMA"),
        ("f1.timing.lap", key, codec.encode(Lap.TOPIC, negative), "INVALID"),
        ("f1.telemetry.car", f"{race_id}:99".encode(), codec.encode(Telemetry.TOPIC, unknown), "UNKNOWN_DRIVER"),
        ("f1.timing.lap", key, codec.encode(Lap.TOPIC, repeat), "OUT_OF_SEQUENCE"),
    ]


def _consume(bootstrap: str, topic: str, codec: Codec, keep: Any, timeout_s: float = 30.0) -> list[Any]:
    """Every record of ``topic`` that ``keep`` accepts: each partition to its end, then until quiet
    (the embedded broker's high watermarks are approximate)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    seen = dict.fromkeys(parts, 0)
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    idle = 0
    while time.monotonic() < deadline and (any(seen[p] < ends[p] for p in parts) or idle < 6):
        batch = consumer.consume(1000, 0.5)
        idle = 0 if batch else idle + 1
        for msg in batch:
            if msg.error() is None:
                seen[msg.partition()] = msg.offset() + 1
                rec = codec.decode_record(msg.value())
                if keep(rec):
                    out.append(rec)
    consumer.close()
    return out


def _key(record: Any) -> bytes:
    if isinstance(record, (Lap, Telemetry)):
        return f"{record.race_id}:{record.driver_number}".encode()
    return str(record.race_id).encode()


@pytest.fixture(scope="module")
def produced_race(kafka_bootstrap: str, registry_url: str) -> dict[str, Any]:
    """The race, produced at max speed, with malformed records injected half-way."""
    race_id = f"it-{uuid.uuid4().hex[:8]}"
    codec = Codec(make_registry_client(registry_url))
    sim = RaceSimulator(race_id, seed=7, laps=LAPS)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5,
                         "queue.buffering.max.messages": 1_000_000})
    bad: list[tuple[str, bytes, bytes, str]] = []
    first_lap: Lap | None = None
    crossings: dict[int, list[tuple[int, int]]] = {}
    for i, record in enumerate(sim.records()):
        if isinstance(record, Lap):
            crossings.setdefault(record.lap, []).append((record.crossing_ms, record.driver_number))
            if first_lap is None:
                first_lap = record
        if i == 150_000 and first_lap is not None:
            bad = _bad_records(codec, race_id, first_lap)
            for topic, key, value, _ in bad:
                producer.produce(topic, key=key, value=value)
        producer.produce(record.TOPIC, key=_key(record), value=codec.encode(record.TOPIC, record))
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(30)
    assert bad, "the race was too short to inject malformed records"
    lap_chart = {lap: [n for _t, n in sorted(cs)] for lap, cs in crossings.items()}
    return {"race_id": race_id, "truth": sim.truth(), "codec": codec, "bad": bad, "records": i + 1,
            "lap_chart": lap_chart}


def _check_against_truth(doc: dict[str, Any], events: list[dict[str, Any]], truth: dict[str, Any]) -> None:
    classification = next(e for e in events if e["type"] == "CLASSIFICATION")["classification"]
    assert [(c["driver_number"], c["laps"], c["status"]) for c in classification] == [
        (c["driver_number"], c["laps"], c["status"]) for c in truth["classification"]]
    fl, tfl = doc["fastest_lap"], truth["fastest_lap"]
    assert (fl["driver_number"], fl["lap"], fl["lap_time_ms"]) == (tfl["driver_number"], tfl["lap"], tfl["lap_time_ms"])
    hero, th = doc["hero"], truth["last_lap_hero"]
    assert hero["final"]
    assert (hero["driver_number"], hero["lap"], hero["lap_time_ms"], hero["positions_gained"]) == (
        th["driver_number"], th["lap"], th["lap_time_ms"], th["positions_gained"])
    assert [r["driver_number"] for r in doc["rows"]] == [c["driver_number"] for c in truth["classification"]]
    overtakes = {(e["lap"], e["driver_number"], e["other_driver_number"], e["overtake_kind"])
                 for e in events if e["type"] == "OVERTAKE"}
    assert overtakes == {(o["lap"], o["driver_number"], o["passed_driver_number"], o["kind"])
                         for o in truth["overtakes"]}
    pits = {(e["driver_number"], e["lap"]) for e in events if e["type"] == "PIT_STOP"}
    assert pits == {(p["driver_number"], p["lap"]) for p in truth["pit_stops"]}


def test_race_through_broker_and_dataflow_matches_ground_truth(
    produced_race: dict[str, Any], kafka_bootstrap: str, redis_url: str, registry_url: str
) -> None:
    race_id, truth, codec = produced_race["race_id"], produced_race["truth"], produced_race["codec"]
    client = redis.Redis.from_url(redis_url)
    try:
        with _flow(kafka_bootstrap, redis_url, registry_url, workers=1) as proc:
            doc = _wait_final(client, race_id, proc, produced_race["records"])
            events = _stream_events(client, race_id)
            _check_against_truth(doc, events, truth)
            ranked = [int(m) for m in client.zrange(leaderboard_key(race_id), 0, -1)]
            assert ranked == [c["driver_number"] for c in truth["classification"]]
            chart = {int(k): json.loads(v) for k, v in client.hgetall(lapchart_key(race_id)).items()}
            assert chart == produced_race["lap_chart"]

            # the same on the Kafka output topic, read with the codec
            topic_events = _consume(kafka_bootstrap, "f1.race.events", codec,
                                    lambda r: r.race_id == race_id)
            by_type = {str(e.type): e for e in topic_events}
            assert [c.driver_number for c in by_type["CLASSIFICATION"].classification or []] == [
                c["driver_number"] for c in truth["classification"]]
            finals = [e for e in topic_events if str(e.type) == "LAST_LAP_HERO" and not e.provisional]
            assert [e.driver_number for e in finals] == [truth["last_lap_hero"]["driver_number"]]
            fastest = [e for e in topic_events if str(e.type) == "FASTEST_LAP"]
            assert fastest[-1].driver_number == truth["fastest_lap"]["driver_number"] or any(
                e.driver_number == truth["fastest_lap"]["driver_number"]
                and e.lap == truth["fastest_lap"]["lap"] for e in fastest)

            # every malformed record is a dead letter with its reason and original bytes
            letters = _consume(kafka_bootstrap, "f1.deadletter", codec,
                               lambda d: d.race_id == race_id or (d.key or b"").startswith(race_id.encode()))
            got = {(d.value, d.error_type) for d in letters}
            for _topic, _key, value, error_type in produced_race["bad"]:
                assert (value, error_type) in got, f"no dead letter {error_type}"
            assert all(d.reason for d in letters)
    finally:
        for key in client.scan_iter(race_keys_pattern(race_id)):
            client.delete(key)
        client.hdel(RACES_KEY, race_id)


@pytest.fixture
def history_db(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL URL whose tables live in a schema of their own (dropped afterwards)."""
    import psycopg

    schema = f"it_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _lap_rows(database_url: str, race_id: str, expected: int) -> tuple[int, int]:
    """(rows, distinct driver-laps) of the race in the laps table, once the writes have landed."""
    import psycopg

    deadline = time.monotonic() + 15
    while True:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT count(*), count(DISTINCT (driver_number, lap)) FROM laps WHERE race_id = %s",
                               (race_id,)).fetchone()
        assert row is not None
        if int(row[0]) >= expected or time.monotonic() > deadline:
            return int(row[0]), int(row[1])
        time.sleep(0.3)


def _standings_laps(database_url: str, race_id: str) -> list[int]:
    import psycopg

    with psycopg.connect(database_url) as conn:
        return [n for (n,) in conn.execute("SELECT lap FROM standings WHERE race_id = %s ORDER BY lap", (race_id,))]


def test_two_workers_give_the_same_results_as_one_and_replays_change_nothing(
    produced_race: dict[str, Any], kafka_bootstrap: str, redis_url: str, registry_url: str, history_db: str
) -> None:
    race_id = produced_race["race_id"]
    laps_in_race = sum(len(order) for order in produced_race["lap_chart"].values())
    results = []
    clients = []
    try:
        for workers, db in ((1, 13), (2, 14)):
            url = _with_db(redis_url, db)
            client = redis.Redis.from_url(url)
            clients.append(client)
            pg = history_db if workers == 1 else None
            with _flow(kafka_bootstrap, url, registry_url, workers=workers, database_url=pg) as proc:
                doc = _wait_final(client, race_id, proc, produced_race["records"])
                events = _stream_events(client, race_id)
            # every event, commentary included, is decided from event times alone
            stable = {e["event_id"]: e for e in events}
            results.append((doc["rows"], doc["hero"], doc["fastest_lap"], doc["version"], stable))
            _check_against_truth(doc, events, produced_race["truth"])
        one, two = results
        assert one[0] == two[0] and one[1] == two[1] and one[2] == two[2] and one[3] == two[3]
        assert one[4] == two[4]

        # replay the same input into the first database: same state, same events, nothing added
        first = clients[0]
        before_events = first.xrange(events_key(race_id))
        before_state = json.loads(first.get(state_key(race_id)) or b"{}")
        first.delete(state_key(race_id), version_key(race_id))
        assert _lap_rows(history_db, race_id, laps_in_race) == (laps_in_race, laps_in_race)  # each lap once
        # the flow started after the whole race was produced (one long backlog): still a tower per lap
        assert _standings_laps(history_db, race_id) == list(range(1, LAPS + 1))
        with _flow(kafka_bootstrap, _with_db(redis_url, 13), registry_url, workers=1, database_url=history_db) as proc:
            after_state = _wait_final(first, race_id, proc, produced_race["records"])
            time.sleep(1.0)
        assert _lap_rows(history_db, race_id, laps_in_race) == (laps_in_race, laps_in_race)  # still once
        after_events = first.xrange(events_key(race_id))
        assert after_events == before_events
        for key in ("rows", "hero", "fastest_lap", "version", "final"):
            assert after_state[key] == before_state[key]
    finally:
        for client in clients:
            for key in client.scan_iter(race_keys_pattern(race_id)):
                client.delete(key)
            client.hdel(RACES_KEY, race_id)
