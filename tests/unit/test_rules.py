"""One rule, one definition: every user of the representative lap, the fuel correction and the pit
stop agrees with the rule's module when fed the same laps."""

from __future__ import annotations

import sqlite3

import numpy as np
import polars as pl
import pytest

from dataflows.outputs import Tower
from dataflows.race.driver import DriverState, DriverUpdate
from dataflows.race.stints import StintTracker
from dataflows.race.strategist import Strategist
from schemas.model import Lap, TrackStatus
from simulator.truth import _pit_stops
from strategy import features as F
from strategy import fuel, pitstops, representative
from strategy.train import degradation_rows
from tests.support.race_builder import Race

#: (lap, lap time ms, live status, feed codes as in a lap table, pit in, pit out, deleted)
LAPS = [
    (1, 99_000, TrackStatus.GREEN, "1", False, False, False),  # standing start
    (2, 91_000, TrackStatus.GREEN, "1", False, False, False),
    (3, 91_100, TrackStatus.YELLOW, "12", False, False, False),  # a yellow during the lap
    (4, 91_150, TrackStatus.GREEN, "1", False, False, True),  # deleted for track limits
    (5, 91_200, TrackStatus.GREEN, "1", False, False, False),
    (6, 115_000, TrackStatus.SC, "41", False, False, False),
    (7, 120_000, TrackStatus.VSC, "6", False, False, False),
    (8, 91_300, TrackStatus.GREEN, "1", False, False, False),
    (9, 91_350, TrackStatus.GREEN, "1", False, False, False),
]


def _rule() -> list[bool]:
    return [representative.is_representative(n, ms, st, pin, pout) for n, ms, st, _c, pin, pout, _d in LAPS]


def test_the_rule_itself() -> None:
    assert [n for (n, *_), ok in zip(LAPS, _rule(), strict=True) if ok] == [2, 4, 5, 8, 9]


def test_features_and_training_select_the_rules_laps() -> None:
    frame = pl.DataFrame({
        "LapNumber": [n for n, *_ in LAPS], "LapTime": [ms / 1000 for _n, ms, *_ in LAPS],
        "TrackStatus": [c for _n, _m, _s, c, *_ in LAPS],
        "PitInTime": [1.0 if pin else None for *_x, pin, _o, _d in LAPS],
        "PitOutTime": [1.0 if pout else None for *_x, pout, _d in LAPS],
    })
    assert frame.select(F.green_expr())["LapNumber"].to_list() == _rule()


def test_stints_use_the_rules_laps() -> None:
    tracker = StintTracker(total_laps=60)
    for n, ms, st, _c, pin, pout, _d in LAPS:
        out = tracker.update("r", 1, n, ms, compound="SOFT", tyre_age=n, stint=1, pit_in=pin, pit_out=pout,
                             track_status=st)
    assert out[-1].laps_used == sum(_rule())  # no outliers among them


def test_the_strategist_feeds_the_model_the_rules_laps() -> None:
    strategist, car = Strategist(), DriverState()
    for n, ms, st, _c, pin, pout, deleted in LAPS:
        u = car.update(Lap(f"e{n}", "r", 7, n, n * 100_000, ms, pit_in=pin, pit_out=pout, track_status=st,
                           deleted=deleted))
        assert isinstance(u, DriverUpdate)
        strategist.observe(u)
    assert [h.green for h in strategist.laps[7]] == _rule()


def test_the_history_sql_condition_is_the_rule() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE laps (lap int, lap_time_ms int, track_status text, pit_in bool, pit_out bool)")
    db.executemany("INSERT INTO laps VALUES (?, ?, ?, ?, ?)",
                   [(n, ms, str(st), pin, pout) for n, ms, st, _c, pin, pout, _d in LAPS]
                   + [(10, None, "GREEN", False, False), (11, 91_000, "GREEN", True, False),
                      (12, 91_000, "GREEN", False, True), (13, 91_000, "RED", False, False)])
    got = [bool(x) for (x,) in db.execute(f"SELECT {representative.sql_condition()} FROM laps ORDER BY lap")]
    want = [*_rule(), False, False, False, False]
    assert got == want


# ------------------------------------------------------------------------------------------ fuel

def test_fuel_spellings_agree() -> None:
    laps, totals = np.array([1, 10, 44, 57, 60]), np.array([57, 57, 57, 57, 57])
    scalar = [fuel.fuel_s(int(n), int(t)) for n, t in zip(laps, totals, strict=True)]
    assert fuel.fuel_s_array(laps, totals) == pytest.approx(scalar)
    frame = pl.DataFrame({"lap": laps, "total_laps": totals}).select(fuel.fuel_s_expr())
    assert frame.to_series().to_list() == pytest.approx(scalar)


def test_stints_features_and_training_correct_for_fuel_alike() -> None:
    total, wear_ms = 40, 70.0
    # lap times = base + tyre wear - fuel burnt: fuel-corrected, the slope is the wear alone
    times = {n: round(90_000 + wear_ms * n - 1000 * (fuel.fuel_s(1, total) - fuel.fuel_s(n, total)))
             for n in range(2, 12)}
    tracker = StintTracker(total_laps=total)
    for n in range(1, 12):
        out = tracker.update("r", 1, n, times.get(n, 99_000), compound="HARD", tyre_age=n, stint=1)
    assert out[-1].degradation_ms_per_lap == pytest.approx(wear_ms, abs=0.02)

    ctx = pl.DataFrame({"race": "r", "Driver": "AAA", "Stint": 1, "circuit": "x", "green": True,
                        "lap": list(times), "total_laps": total, "LapTime": [t / 1000 for t in times.values()],
                        "tyre_age": list(times)})
    y = degradation_rows(ctx)["y"].to_list()
    assert y == pytest.approx([fuel.fuel_corrected(t / 1000, n, total) for n, t in times.items()])

    x = F.matrix([F.LapContext(circuit=None, lap=12, total_laps=total, compound="HARD", tyre_age=12,
                               stint_lap=12)], {})
    assert x[0, F.FEATURES.index("fuel_s")] == pytest.approx(fuel.fuel_s(12, total))


# ------------------------------------------------------------------------------------------ pit stops

#: (lap, pit in, pit out, status): a pit-lane start, a stop, a red-flag stay in the pit lane, a
#: second stop, and an in-lap at the end (retired in the pits)
PIT_LAPS = [(1, False, True, TrackStatus.GREEN), (2, False, False, TrackStatus.GREEN),
            (3, True, False, TrackStatus.GREEN), (4, False, True, TrackStatus.GREEN),
            (5, True, False, TrackStatus.RED), (6, False, True, TrackStatus.RED),
            (7, True, False, TrackStatus.GREEN), (8, False, True, TrackStatus.GREEN),
            (9, True, False, TrackStatus.GREEN)]


def test_the_pit_stop_rule() -> None:
    assert pitstops.stop_laps(PIT_LAPS) == [3, 7]


def test_driver_state_events_towers_and_truth_count_the_rules_stops() -> None:
    r = Race(cars=2, laps=len(PIT_LAPS))
    for n, pin, pout, status in PIT_LAPS:
        r.lap(1, n, n * 100_000, pit_in=pin, pit_out=pout, track_status=status)
        r.lap(2, n, n * 100_000 + 500)
    want = pitstops.stop_laps(PIT_LAPS)
    assert [e.lap for e in r.events("PIT_STOP") if e.driver_number == 1] == want
    assert r.drivers[1].pit_count == len(want)
    towers = {o.lap: o for o in r.outputs if isinstance(o, Tower)}
    assert towers, "the race state emits a tower per lap"
    for lap, tower in towers.items():
        row = next(x for x in tower.rows if x.driver_number == 1)
        assert row.pit_count == len(pitstops.stop_laps(PIT_LAPS[:row.laps])), lap

    class _Crossing:
        def __init__(self, lap: int, pit_in: bool, pit_out: bool, status: TrackStatus) -> None:
            self.lap, self.pit_in, self.pit_out, self.track_status = lap, pit_in, pit_out, status

    class _Car:
        number, code = 1, "AAA"
        crossings = [_Crossing(*x) for x in PIT_LAPS]

    class _Log:
        cars = [_Car()]

    assert [s["lap"] for s in _pit_stops(_Log())] == want  # type: ignore[arg-type]
