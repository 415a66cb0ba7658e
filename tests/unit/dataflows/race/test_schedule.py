"""When the strategy calls for a lap run (the race step hands out each complete lap once)."""

from __future__ import annotations

from dataflows.race.schedule import STRAGGLER_GRACE_S
from schemas.model import ControlKind
from tests.support.race_builder import Race


def _strategy_laps(r: Race, later_s: float = 0.0) -> list[int]:
    return r.proc.schedule.laps(r.state, r.now + later_s)


def test_a_lap_is_complete_for_strategy_when_every_running_car_has_crossed() -> None:
    r = Race(cars=3, laps=10)
    r.lap(1, 1, 90_000)
    r.lap(2, 1, 90_500)
    assert _strategy_laps(r) == []
    r.lap(3, 1, 91_000)
    assert _strategy_laps(r) == [1]
    assert _strategy_laps(r) == []  # each lap once


def test_a_lapped_car_does_not_hold_the_lap_back_once_the_watermark_passes() -> None:
    r = Race(cars=3, laps=10)
    for n, t in ((1, 90_000), (2, 90_500), (3, 120_000)):
        r.lap(n, 1, t)
    assert _strategy_laps(r) == [1]
    r.lap(1, 2, 180_000)
    r.lap(2, 2, 180_500)
    assert _strategy_laps(r) == []  # car 3 has not crossed lap 2, and nothing says it is a lap down
    r.lap(1, 3, 270_000)
    r.lap(2, 3, 270_500)
    assert _strategy_laps(r) == []  # watermark: car 3 last seen at 120 s, leader's lap 3 at 270 s
    r.lap(3, 2, 275_000)  # car 3 crosses lap 2 after the leader's lap 3: one lap down
    assert _strategy_laps(r) == [2]


def test_retired_cars_are_not_waited_for_and_nothing_after_the_flag() -> None:
    r = Race(cars=3, laps=3)
    r.lap(1, 1, 90_000)
    r.lap(2, 1, 90_500)
    r.control(100_000, ControlKind.RETIREMENT, driver=3)
    assert _strategy_laps(r) == [1]
    r.lap(1, 2, 180_000)
    r.lap(2, 2, 180_400)
    assert _strategy_laps(r) == [2]
    r.lap(1, 3, 270_000)
    r.lap(2, 3, 270_400)
    assert _strategy_laps(r) == []  # lap 3 is the last lap: no calls


def test_a_car_that_stops_silently_holds_the_calls_back_two_laps_and_a_grace_period_at_most() -> None:
    r = Race(cars=3, laps=10)
    for n, t in ((1, 90_000), (2, 90_500), (3, 91_000)):
        r.lap(n, 1, t)
    assert _strategy_laps(r) == [1]
    r.lap(1, 2, 180_000)
    r.lap(2, 2, 180_500)  # car 3 stops on track; no retirement message
    r.lap(1, 3, 270_000)
    assert _strategy_laps(r, later_s=60) == []  # the leader is only one lap further on
    r.lap(1, 4, 360_000)
    assert _strategy_laps(r) == []  # its partition may just be late: wait a little (wall clock)
    assert r.proc.schedule.deadline_s() == r.now + STRAGGLER_GRACE_S
    assert _strategy_laps(r, later_s=STRAGGLER_GRACE_S - 0.5) == []
    assert _strategy_laps(r, later_s=STRAGGLER_GRACE_S) == [2]
    assert r.proc.schedule.deadline_s() is None


def test_cars_read_laps_late_are_waited_for_not_left_out() -> None:
    """A fast replay: the leader's partition is read three laps ahead of the others'."""
    r = Race(cars=3, laps=10)
    for lap in (1, 2, 3):
        r.lap(1, lap, lap * 90_000)
    assert _strategy_laps(r) == []
    r.lap(2, 1, 90_500)
    assert _strategy_laps(r, later_s=STRAGGLER_GRACE_S - 1) == []  # car 2's crossing restarted the wait
    r.lap(3, 1, 91_000)
    assert _strategy_laps(r) == [1]
    assert r.proc.schedule.deadline_s() is None  # lap 2: the leader is not two laps further on
