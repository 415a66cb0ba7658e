"""Finding 4 of issue 11 (the sink part): the dataflow survives a Redis or PostgreSQL outage.

The real race dataflow runs against a broker, Redis and PostgreSQL started by the test; mid-race
the test stops Redis (or PostgreSQL) for ~20 s, produces the rest of the race meanwhile, and
restarts it on the same port. The flow must keep running (its sinks retry with back-pressure),
and the final Redis / PostgreSQL contents must equal the truth: nothing lost, nothing twice.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from infra.flow_cli import flow_process
from infra.services import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis, free_port, free_ports
from infra.topics import create_topics
from schemas.codec import Codec, make_registry_client
from schemas.model import Commentary, RaceEvent
from schemas.redis_layout import lapchart_key
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
FAULT_AT_LAP = 4
OUTAGE_S = 20


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker of this module's own, so the flows here read only these tests' races."""
    with EmbeddedKafka(free_port(), tmp_path_factory.mktemp("kafka")) as kafka:
        create_topics(kafka.bootstrap, 4)
        yield kafka.bootstrap


def _events_truth(bootstrap: str, codec: Codec, race_id: str) -> Counter[str]:
    """Event ids the flow published (events and commentary), each once."""
    ids = [e.event_id for e in output_topic(bootstrap, "f1.race.events", codec, race_id) if isinstance(e, RaceEvent)]
    ids += [c.event_id for c in output_topic(bootstrap, "f1.race.commentary", codec, race_id)
            if isinstance(c, Commentary)]
    return Counter(set(ids))


def test_flow_survives_a_redis_outage(broker: str, registry_url: str, tmp_path: Path) -> None:
    race = simulate(f"out-r-{uuid.uuid4().hex[:6]}", LAPS)
    codec = Codec(make_registry_client(registry_url))
    split = race.split_at_lap(FAULT_AT_LAP)
    server = EmbeddedRedis(free_port(), tmp_path / "redis", persist=True).start()
    client = redis.Redis.from_url(server.url)
    try:
        produce(broker, codec, race.records[:split])
        with flow_process(broker, server.url, registry_url, strategy=False) as proc:
            wait_for(f"lap {FAULT_AT_LAP} in Redis",
                     lambda: (s := state(client, race.race_id)) is not None and s["lap"] >= FAULT_AT_LAP, proc)
            server.stop()  # Redis goes away mid-race
            produce(broker, codec, race.records[split:])
            deadline = time.monotonic() + OUTAGE_S
            while time.monotonic() < deadline:
                assert proc.poll() is None, f"the dataflow exited with code {proc.returncode} during the outage"
                time.sleep(0.5)
            server.start()  # back on the same port, with its data
            doc = wait_settled(client, race.race_id, proc)
            check_against_truth(doc, race)
            entries = stream_entries(client, race.race_id)
            in_stream = Counter(e["event_id"] for _i, e in entries)
            assert max(in_stream.values()) == 1, "an event is in the stream twice"
            assert in_stream == _events_truth(broker, codec, race.race_id)
            chart = {int(k): json.loads(v) for k, v in client.hgetall(lapchart_key(race.race_id)).items()}
            assert chart == race.lap_chart
            assert proc.poll() is None
    finally:
        client.close()
        server.stop()


def test_flow_survives_a_postgresql_outage(broker: str, registry_url: str, tmp_path: Path) -> None:
    race = simulate(f"out-p-{uuid.uuid4().hex[:6]}", LAPS)
    codec = Codec(make_registry_client(registry_url))
    split = race.split_at_lap(FAULT_AT_LAP)
    pg_port, redis_port = free_ports(2)
    pg = EmbeddedPostgres(pg_port, tmp_path / "pg", fsync=False).start()
    rds = EmbeddedRedis(redis_port, tmp_path / "redis").start()
    client = redis.Redis.from_url(rds.url)
    rid = race.race_id

    def laps_stored() -> int:
        try:
            with psycopg.connect(pg.url, connect_timeout=2) as conn:
                row = conn.execute("SELECT count(*) FROM laps WHERE race_id = %s", (rid,)).fetchone()
                return int(row[0]) if row else 0
        except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
            return 0  # not migrated yet, or the server is restarting

    try:
        produce(broker, codec, race.records[:split])
        with flow_process(broker, rds.url, registry_url, database_url=pg.url, strategy=False) as proc:
            wait_for(f"lap {FAULT_AT_LAP} in PostgreSQL", lambda: laps_stored() >= 20 * (FAULT_AT_LAP - 1), proc)
            pg.stop()  # PostgreSQL goes away mid-race
            produce(broker, codec, race.records[split:])
            deadline = time.monotonic() + OUTAGE_S
            while time.monotonic() < deadline:
                assert proc.poll() is None, f"the dataflow exited with code {proc.returncode} during the outage"
                time.sleep(0.5)
            pg.start()  # back on the same port, with its data
            doc = wait_settled(client, rid, proc)
            check_against_truth(doc, race)
            all_laps = sum(len(order) for order in race.lap_chart.values())
            wait_for("every lap in PostgreSQL", lambda: laps_stored() >= all_laps, proc, timeout_s=60)
            wait_for("the race finished in PostgreSQL", lambda: _status(pg.url, rid) == "finished", proc, timeout_s=60)
            events = {e.event_id for e in output_topic(broker, "f1.race.events", codec, rid)
                      if isinstance(e, RaceEvent)}
            with psycopg.connect(pg.url) as conn:
                assert conn.execute("SELECT count(*), count(DISTINCT (driver_number, lap)) FROM laps "
                                    "WHERE race_id = %s", (rid,)).fetchone() == (all_laps, all_laps)
                for lap, order in race.lap_chart.items():
                    got = conn.execute("SELECT driver_number FROM laps WHERE race_id = %s AND lap = %s "
                                       "ORDER BY position", (rid, lap)).fetchall()
                    assert [n for (n,) in got] == order, f"lap {lap}"
                stored = {e for (e,) in conn.execute("SELECT event_id FROM events WHERE race_id = %s", (rid,))}
                assert stored == events
                # the backlog after the outage was written in large batches: still a tower per lap
                towers = [n for (n,) in conn.execute("SELECT lap FROM standings WHERE race_id = %s ORDER BY lap",
                                                     (rid,))]
                assert towers == list(range(1, LAPS + 1))
            assert proc.poll() is None
    finally:
        client.close()
        rds.stop()
        pg.stop()


def _status(url: str, race_id: str) -> str | None:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute("SELECT status FROM races WHERE race_id = %s", (race_id,)).fetchone()
            return None if row is None else str(row[0])
    except psycopg.OperationalError:
        return None
