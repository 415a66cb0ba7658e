"""The timing tower at the end of every lap (``dataflows.race.towers``), as the race state emits it."""

from __future__ import annotations

from typing import Any

from dataflows.outputs import Tower
from dataflows.race.driver import DriverState, DriverUpdate
from dataflows.race.processor import RaceProcessor
from schemas.model import CarStatus, ControlKind, Lap
from simulator.race import RaceSimulator
from tests.support.race_builder import Race


def _towers(outputs: list[Any]) -> dict[int, Tower]:
    """The latest emission of each lap's tower."""
    out: dict[int, Tower] = {}
    for o in outputs:
        if isinstance(o, Tower) and (o.lap not in out or o.version > out[o.lap].version):
            out[o.lap] = o
    return out


def test_a_lapped_car_shows_a_lap_down_and_the_flag_closes_the_last_towers() -> None:
    r = Race(cars=3, laps=4)
    for t, n, lap in ((90, 1, 1), (92, 2, 1), (150, 3, 1), (180, 1, 2), (184, 2, 2), (270, 1, 3), (276, 2, 3),
                      (300, 3, 2), (360, 1, 4), (368, 2, 4), (450, 3, 3)):
        r.lap(n, lap, t * 1000)
    towers = _towers(r.outputs)
    assert sorted(towers) == [1, 2, 3, 4]
    one = towers[1]
    assert one.ts_ms == 150_000 and [row.driver_number for row in one.rows] == [1, 2, 3]
    assert [(row.gap_ms, row.interval_ms) for row in one.rows] == [(None, None), (2000, 2000), (60_000, 58_000)]
    # lap 2 ended when car 3 completed it, by which time the others were on lap 3 and had lapped it
    two = towers[2]
    assert two.ts_ms == 300_000
    assert [(row.driver_number, row.laps, row.gap_laps, row.interval_laps) for row in two.rows] == [
        (1, 3, 0, 0), (2, 3, 0, 0), (3, 2, 1, 1)]
    # car 3 took the flag on lap 3, after the others had finished lap 4: laps 3 and 4 end there
    for lap in (3, 4):
        assert towers[lap].ts_ms == 450_000
        assert [(row.driver_number, row.laps, row.status) for row in towers[lap].rows] == [
            (1, 4, CarStatus.FINISHED), (2, 4, CarStatus.FINISHED), (3, 3, CarStatus.FINISHED)]
    # each lap went out once: nothing changed after
    assert len([o for o in r.outputs if isinstance(o, Tower)]) == 4


def test_a_tower_waits_for_every_car_and_a_late_retirement_emits_it_again() -> None:
    r = Race(cars=3, laps=3)
    for n, lap, t in ((3, 1, 89_000), (1, 1, 90_000), (2, 1, 91_000), (3, 2, 170_000), (1, 2, 180_000)):
        r.lap(n, lap, t)
    assert sorted(_towers(r.outputs)) == [1]  # car 2 has not completed lap 2 yet
    r.lap(2, 2, 181_000)
    assert sorted(_towers(r.outputs)) == [1]  # nor is it known whether the others crossed again meanwhile
    for n in (1, 2, 3):
        r.tel(n, 200_000, 3, 0.1)
    first = _towers(r.outputs)[2]
    assert [(row.driver_number, row.status) for row in first.rows] == [
        (3, CarStatus.RUNNING), (1, CarStatus.RUNNING), (2, CarStatus.RUNNING)]
    # race control said car 3 stopped at 175 s, before lap 2 was over: read late, it changes that tower
    r.control(175_000, ControlKind.RETIREMENT, driver=3)
    again = _towers(r.outputs)[2]
    assert again.version > first.version and again.ts_ms == first.ts_ms
    assert [(row.driver_number, row.status, row.gap_ms) for row in again.rows] == [
        (1, CarStatus.RUNNING, None), (2, CarStatus.RUNNING, 1000), (3, CarStatus.RETIRED, None)]


def _simulated(one_batch: bool) -> dict[int, tuple[Any, ...]]:
    proc = RaceProcessor("sim")
    drivers: dict[int, DriverState] = {}
    pairs: list[tuple[Any, None]] = []
    for record in RaceSimulator("sim", seed=11, laps=5).records():
        if isinstance(record, Lap):
            update = drivers.setdefault(record.driver_number, DriverState()).update(record)
            assert isinstance(update, DriverUpdate)
            record = update
        pairs.append((record, None))
    if one_batch:
        out = proc.on_batch(pairs, 0.0)
    else:
        out = [o for i, p in enumerate(pairs) for o in proc.on_batch([p], i / 1000)]
    return {lap: (t.ts_ms, t.track_status, t.rows) for lap, t in _towers(out).items()}


def test_one_backlog_batch_gives_the_towers_of_a_record_by_record_run() -> None:
    by_record, backlog = _simulated(False), _simulated(True)
    assert sorted(by_record) == [1, 2, 3, 4, 5]
    assert backlog == by_record
