"""Stint features (DESIGN.md: consecutive laps on one set of tyres; fuel-corrected degradation)."""

from __future__ import annotations

import pytest

from dataflows.race.stints import StintTracker, degradation_fit
from schemas.model import Stint, TrackStatus
from strategy.fuel import fuel_s_per_lap
from tests.support.race_builder import Race

#: race distance of these tests, and the fuel correction per lap it means (ms)
TOTAL = 55
FUEL_MS = fuel_s_per_lap(TOTAL) * 1000


def test_pit_stop_closes_the_stint_and_in_and_out_laps_are_not_used() -> None:
    r = Race(cars=1, laps=TOTAL)  # the race state keeps the stints: it knows the race distance
    times = [100_000, 95_000, 95_100, 95_200, 95_300, 118_000]  # lap 6 is the in-lap
    for n, ms in enumerate(times, start=1):
        out = r.lap(1, n, n * 100_000, ms, compound="MEDIUM", tyre_age=n, pit_in=n == 6)
    first = [o for o in out if isinstance(o, Stint)][-1]
    assert (first.stint, first.start_lap, first.end_lap, first.length, first.laps_used) == (1, 1, 6, 6, 4)
    out = r.lap(1, 7, 700_000, 116_000, compound="HARD", tyre_age=1, pit_out=True)
    closed, current = [o for o in out if isinstance(o, Stint)]
    assert (closed.stint, closed.open, closed.end_lap, closed.compound) == (1, False, 6, "MEDIUM")
    assert closed.median_pace_ms == 95_150
    # 100 ms per lap raw + 60 ms per lap of fuel burnt (3.3 s over 55 laps) = 160 ms per lap of tyre age
    assert closed.degradation_ms_per_lap == pytest.approx(100 + FUEL_MS)
    assert (current.stint, current.open, current.start_lap, current.compound, current.laps_used) == (
        2, True, 7, "HARD", 0)
    assert current.median_pace_ms is None and current.degradation_ms_per_lap is None


def test_constant_lap_times_mean_the_tyres_are_wearing_as_fast_as_fuel_burns() -> None:
    t = StintTracker(TOTAL)
    for n in range(1, 12):
        out = t.update("r", 1, n, 90_000, compound="HARD", tyre_age=n, stint=1)
    s = out[-1]
    assert s.degradation_ms_per_lap == pytest.approx(FUEL_MS)
    assert s.degradation_stderr == pytest.approx(0.0)
    assert s.consistency_ms == pytest.approx(0.0)


def test_neutralised_laps_and_outliers_are_left_out() -> None:
    t = StintTracker(TOTAL)
    laps = [(1, 99_000, False), (2, 95_000, False), (3, 95_100, False), (4, 130_000, True),
            (5, 128_000, True), (6, 95_400, False), (7, 101_500, False), (8, 95_600, False)]
    for n, ms, sc in laps:
        out = t.update("r", 1, n, ms, compound="SOFT", tyre_age=n, stint=1,
                       track_status=TrackStatus.SC if sc else TrackStatus.GREEN)
    s = out[-1]
    assert s.laps_used == 4  # laps 2, 3, 6, 8: lap 1, the SC laps and the 6 s slow lap 7 are out
    assert s.median_pace_ms == 95_250
    assert s.degradation_ms_per_lap == pytest.approx(100 + FUEL_MS, abs=1)


def test_used_tyres_start_with_their_age_and_missing_ages_are_counted() -> None:
    t = StintTracker(TOTAL)
    out = t.update("r", 1, 10, 96_000, compound="HARD", tyre_age=4, stint=2)
    assert out[-1].tyre_age_start == 3
    t2 = StintTracker(TOTAL)
    for n in range(2, 6):
        out = t2.update("r", 1, n, 95_000 + 50 * n, compound=None, tyre_age=None, stint=1)
    assert out[-1].tyre_age_start == 0 and out[-1].degradation_ms_per_lap == pytest.approx(50 + FUEL_MS)


def test_degradation_fit_needs_two_ages() -> None:
    assert degradation_fit([], TOTAL) is None
    assert degradation_fit([(2, 3, 95_000)], TOTAL) is None
    assert degradation_fit([(2, 3, 95_000), (3, 3, 95_100)], TOTAL) is None
    slope, stderr, sd = degradation_fit([(2, 2, 95_000), (3, 3, 95_000)], TOTAL)  # type: ignore[misc]
    assert (slope, stderr, sd) == (pytest.approx(FUEL_MS), None, None)
