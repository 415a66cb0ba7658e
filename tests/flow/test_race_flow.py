"""The race dataflow with Bytewax testing I/O, under one worker and under two."""

from __future__ import annotations

from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from dataflows.connectors.kafka import source_message
from dataflows.outputs import Tower
from dataflows.race.state import applied_of
from dataflows.race_flow import RaceSinks, build_race_flow
from schemas.codec import Codec, make_registry_client
from schemas.model import DeadLetter, Lap, Leaderboard, RaceEvent, Telemetry
from simulator.race import RaceSimulator
from tests.support.tower_checks import inconsistencies

LAPS = 12


def _key(record: Any) -> str:
    if isinstance(record, (Lap, Telemetry)):
        return f"{record.race_id}:{record.driver_number}"
    return str(record.race_id)


@pytest.fixture(scope="module")
def race() -> dict[str, Any]:
    codec = Codec(make_registry_client("mock://flow-tests"))
    sim = RaceSimulator("flow-1", seed=3, laps=LAPS)
    messages = [source_message(r.TOPIC, _key(r), codec.encode(r.TOPIC, r), offset=i)
                for i, r in enumerate(sim.records())]
    return {"codec": codec, "messages": messages, "truth": sim.truth()}


def _run(race: dict[str, Any], workers: int, extra: list[Any] | None = None,
         pg: list[Any] | None = None) -> list[Any]:
    out: list[Any] = []
    codec = race["codec"]
    flow = build_race_flow(TestingSource(race["messages"] + (extra or []), batch_size=500),
                           RaceSinks(raw=TestingSink(out), pg=None if pg is None else TestingSink(pg)),
                           lambda: codec)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return out


def _final(out: list[Any]) -> Leaderboard:
    return max((o for o in out if isinstance(o, Leaderboard)), key=lambda b: b.version)


def test_one_worker_matches_ground_truth(race: dict[str, Any]) -> None:
    out = _run(race, 1)
    truth = race["truth"]
    board = _final(out)
    assert board.final and applied_of(board.version) == len(race["messages"])
    assert [r.driver_number for r in board.rows] == [c["driver_number"] for c in truth["classification"]]
    assert board.fastest_lap is not None
    assert (board.fastest_lap.driver_number, board.fastest_lap.lap) == (
        truth["fastest_lap"]["driver_number"], truth["fastest_lap"]["lap"])
    assert board.hero is not None and board.hero.driver_number == truth["last_lap_hero"]["driver_number"]
    overtakes = {(e.lap, e.driver_number, e.other_driver_number) for e in out
                 if isinstance(e, RaceEvent) and e.type == "OVERTAKE"}
    assert overtakes == {(o["lap"], o["driver_number"], o["passed_driver_number"]) for o in truth["overtakes"]}
    assert not [o for o in out if isinstance(o, DeadLetter)]
    # every published tower reads top to bottom: gaps grow down the lead lap, intervals are their steps
    boards = [o for o in out if isinstance(o, Leaderboard)]
    assert len(boards) > LAPS and [(b.version, inconsistencies(b)) for b in boards if inconsistencies(b)] == []


def test_two_workers_produce_the_same_outputs_as_one(race: dict[str, Any]) -> None:
    one, two = _run(race, 1), _run(race, 2)
    assert _final(one) == _final(two)
    # every event is decided from event times alone, so the order in which the workers see the
    # records makes no difference
    events_one = {e.event_id: e for e in one if isinstance(e, RaceEvent)}
    events_two = {e.event_id: e for e in two if isinstance(e, RaceEvent)}
    assert events_one == events_two


def test_bad_records_become_dead_letters_and_do_not_change_the_result(race: dict[str, Any]) -> None:
    codec = race["codec"]
    lap = next(Lap.from_dict(codec.decode(m.value())[1]) for m in race["messages"] if m.topic() == Lap.TOPIC)
    negative = Lap("x1", lap.race_id, lap.driver_number, 2, 1, -100)
    extra = [
        source_message(Lap.TOPIC, "flow-1:1", b"garbage"),
        source_message(Lap.TOPIC, "flow-1:1", b"\x00\x00\x00\x03\xe7" + b"\x00" * 10),
        source_message(Lap.TOPIC, "flow-1:1", codec.encode(Lap.TOPIC, negative)),
        source_message(Lap.TOPIC, "flow-1:77", codec.encode(Lap.TOPIC, Lap("x2", lap.race_id, 77, 1, 90_000, 90_000))),
        source_message(Lap.TOPIC, "flow-1:1", codec.encode(Lap.TOPIC, Lap("x3", lap.race_id, lap.driver_number, 1,
                                                                           1, 90_000))),
    ]
    out = _run(race, 1, extra)
    letters = [o for o in out if isinstance(o, DeadLetter)]
    assert sorted(d.error_type for d in letters) == sorted(
        ["DECODE", "UNKNOWN_SCHEMA", "INVALID", "UNKNOWN_DRIVER", "OUT_OF_SEQUENCE"])
    assert all(d.reason and d.value for d in letters)
    clean = _run(race, 1)
    assert _final(out).rows == _final(clean).rows


def test_every_lap_has_one_tower_the_same_with_one_and_two_workers(race: dict[str, Any]) -> None:
    """The PostgreSQL sink gets the tower at the end of every lap; what it shows depends on event
    times only, not on how the workers interleave the partitions."""
    towers: list[list[Any]] = [[], []]
    _run(race, 1, pg=towers[0])
    _run(race, 2, pg=towers[1])
    latest = []
    for got in towers:
        by_lap: dict[int, Tower] = {}
        for t in got:
            if isinstance(t, Tower) and (t.lap not in by_lap or t.version > by_lap[t.lap].version):
                by_lap[t.lap] = t
        assert sorted(by_lap) == list(range(1, LAPS + 1))
        latest.append({lap: (t.ts_ms, t.track_status, t.rows) for lap, t in by_lap.items()})
    assert latest[0] == latest[1]
    final = latest[0][LAPS][2]
    assert [r.driver_number for r in final] == [c["driver_number"] for c in race["truth"]["classification"]]
