"""Stint features (DESIGN.md: consecutive laps on one set of tyres; fuel-corrected degradation)."""

from __future__ import annotations

import pytest

from dataflows.race.driver import DriverState
from dataflows.race.stints import FUEL_S_PER_LAP, StintTracker, degradation_fit
from schemas.model import Lap, TrackStatus


def _lap(n: int, ms: int, *, compound: str = "MEDIUM", age: int | None = None, pit_in: bool = False,
         pit_out: bool = False, status: TrackStatus = TrackStatus.GREEN) -> Lap:
    return Lap(f"e{n}", "r", 44, n, n * 95_000, ms, pit_in=pit_in, pit_out=pit_out, compound=compound,
               tyre_age=age, track_status=status)


def test_pit_stop_closes_the_stint_and_in_and_out_laps_are_not_used() -> None:
    s = DriverState()
    times = [100_000, 95_000, 95_100, 95_200, 95_300, 118_000]  # lap 6 is the in-lap
    for n, ms in enumerate(times, start=1):
        u = s.update(_lap(n, ms, age=n, pit_in=n == 6))
    assert u is not None and not isinstance(u, type(None))
    first = u.stints[-1]  # type: ignore[union-attr]
    assert (first.stint, first.start_lap, first.end_lap, first.length, first.laps_used) == (1, 1, 6, 6, 4)
    out = s.update(_lap(7, 116_000, compound="HARD", age=1, pit_out=True))
    closed, current = out.stints  # type: ignore[union-attr]
    assert (closed.stint, closed.open, closed.end_lap, closed.compound) == (1, False, 6, "MEDIUM")
    assert closed.median_pace_ms == 95_150
    # 100 ms per lap raw + 60 ms per lap of fuel burnt = 160 ms per lap of tyre age
    assert closed.degradation_ms_per_lap == pytest.approx(100 + FUEL_S_PER_LAP * 1000)
    assert (current.stint, current.open, current.start_lap, current.compound, current.laps_used) == (
        2, True, 7, "HARD", 0)
    assert current.median_pace_ms is None and current.degradation_ms_per_lap is None


def test_constant_lap_times_mean_the_tyres_are_wearing_as_fast_as_fuel_burns() -> None:
    t = StintTracker()
    for n in range(1, 12):
        out = t.update("r", 1, n, 90_000, compound="HARD", tyre_age=n, stint=1)
    s = out[-1]
    assert s.degradation_ms_per_lap == pytest.approx(FUEL_S_PER_LAP * 1000)
    assert s.degradation_stderr == pytest.approx(0.0)
    assert s.consistency_ms == pytest.approx(0.0)


def test_neutralised_laps_and_outliers_are_left_out() -> None:
    t = StintTracker()
    laps = [(1, 99_000, False), (2, 95_000, False), (3, 95_100, False), (4, 130_000, True),
            (5, 128_000, True), (6, 95_400, False), (7, 101_500, False), (8, 95_600, False)]
    for n, ms, sc in laps:
        out = t.update("r", 1, n, ms, compound="SOFT", tyre_age=n, stint=1, neutralised=sc)
    s = out[-1]
    assert s.laps_used == 4  # laps 2, 3, 6, 8: lap 1, the SC laps and the 6 s slow lap 7 are out
    assert s.median_pace_ms == 95_250
    assert s.degradation_ms_per_lap == pytest.approx(100 + FUEL_S_PER_LAP * 1000, abs=1)


def test_used_tyres_start_with_their_age_and_missing_ages_are_counted() -> None:
    t = StintTracker()
    out = t.update("r", 1, 10, 96_000, compound="HARD", tyre_age=4, stint=2)
    assert out[-1].tyre_age_start == 3
    t2 = StintTracker()
    for n in range(2, 6):
        out = t2.update("r", 1, n, 95_000 + 50 * n, compound=None, tyre_age=None, stint=1)
    assert out[-1].tyre_age_start == 0 and out[-1].degradation_ms_per_lap == pytest.approx(110)


def test_degradation_fit_needs_two_ages() -> None:
    assert degradation_fit([]) is None
    assert degradation_fit([(2, 3, 95_000)]) is None
    assert degradation_fit([(2, 3, 95_000), (3, 3, 95_100)]) is None
    slope, stderr, sd = degradation_fit([(2, 2, 95_000), (3, 3, 95_000)])  # type: ignore[misc]
    assert (slope, stderr, sd) == (pytest.approx(60.0), None, None)
