"""Helpers for fault tests that run the real race dataflow against a race produced while it runs.

A test simulates a race, produces its first part, starts the flow (``infra.flow_cli.flow_process``),
injects a fault (a server stopped, Redis flushed), produces the rest and compares the final Redis
and PostgreSQL contents with the truth: the simulator's ground truth, the produced lap chart and
the flow's own Kafka output topics (which the fault does not touch).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from confluent_kafka import Producer

from schemas.codec import Codec
from schemas.model import Lap, Session
from schemas.redis_layout import events_key, state_key
from simulator.race import RaceSimulator
from tests.integration.test_race_pipeline import _consume, _key

FINAL_TIMEOUT_S = 300


@dataclass
class SimulatedRace:
    race_id: str
    session: Session
    records: list[Any]
    truth: dict[str, Any]
    #: lap → driver numbers in crossing order
    lap_chart: dict[int, list[int]] = field(default_factory=dict)

    def split_at_lap(self, lap: int) -> int:
        """Index of the first record after the leader completed ``lap``."""
        for i, record in enumerate(self.records):
            if isinstance(record, Lap) and record.lap == lap:
                return i + 1
        raise ValueError(f"the race has no lap {lap}")


def simulate(race_id: str, laps: int, seed: int = 5) -> SimulatedRace:
    sim = RaceSimulator(race_id, seed=seed, laps=laps)
    records = list(sim.records())
    chart: dict[int, list[tuple[int, int]]] = {}
    for r in records:
        if isinstance(r, Lap):
            chart.setdefault(r.lap, []).append((r.crossing_ms, r.driver_number))
    return SimulatedRace(race_id, sim.session, records, sim.truth(),
                         {lap: [n for _t, n in sorted(cs)] for lap, cs in chart.items()})


def produce(bootstrap: str, codec: Codec, records: Iterable[Any]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000})
    for i, record in enumerate(records):
        producer.produce(record.TOPIC, key=_key(record), value=codec.encode(record.TOPIC, record))
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


def wait_for(what: str, check: Callable[[], Any], proc: subprocess.Popen[bytes] | None,
             timeout_s: float = FINAL_TIMEOUT_S, every_s: float = 0.3) -> Any:
    """Poll ``check`` until it returns something truthy; the flow must stay up meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None:
            assert proc.poll() is None, f"the dataflow exited with code {proc.returncode} while waiting for {what}"
        try:
            got = check()
        except (redis.exceptions.ConnectionError, OSError):
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_s:.0f} s")
        time.sleep(every_s)


def state(client: redis.Redis, race_id: str) -> dict[str, Any] | None:
    raw = client.get(state_key(race_id))
    return None if raw is None else json.loads(raw)


def wait_settled(client: redis.Redis, race_id: str, proc: subprocess.Popen[bytes], quiet_s: float = 3.0
                 ) -> dict[str, Any]:
    """The race's final state once the flow has gone quiet (nothing new for ``quiet_s``)."""
    wait_for("the final classification", lambda: (s := state(client, race_id)) is not None and s["final"], proc)
    last: tuple[Any, ...] | None = None
    since = time.monotonic()
    while True:
        assert proc.poll() is None, f"the dataflow exited with code {proc.returncode}"
        now = (client.get(state_key(race_id)), client.xlen(events_key(race_id)))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            doc = state(client, race_id)
            assert doc is not None
            return doc
        time.sleep(0.3)


def stream_entries(client: redis.Redis, race_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(stream id, {event_id, type, json}) of every entry of the race's events stream."""
    return [(i.decode(), {"event_id": f[b"event_id"].decode(), "type": f[b"type"].decode(),
                          "json": json.loads(f[b"json"])})
            for i, f in client.xrange(events_key(race_id))]


def output_topic(bootstrap: str, topic: str, codec: Codec, race_id: str) -> list[Any]:
    """Every record of one race on a flow output topic."""
    return _consume(bootstrap, topic, codec, lambda r: getattr(r, "race_id", None) == race_id)


def check_against_truth(doc: dict[str, Any], race: SimulatedRace) -> None:
    truth = race.truth
    assert [r["driver_number"] for r in doc["rows"]] == [c["driver_number"] for c in truth["classification"]]
    fl, tfl = doc["fastest_lap"], truth["fastest_lap"]
    assert (fl["driver_number"], fl["lap"], fl["lap_time_ms"]) == (tfl["driver_number"], tfl["lap"],
                                                                 tfl["lap_time_ms"])
    hero, th = doc["hero"], truth["last_lap_hero"]
    assert hero["final"] and (hero["driver_number"], hero["lap"]) == (th["driver_number"], th["lap"])
