"""Sessions ordered by best lap (qualifying, practice) in the race state, on hand-built laps: the
tower by the running part's best times, knock-outs at the part's flag, a deletion that arrives
after its lap, the clock, and none of a race's events (overtakes, pit stops, hero, flag at the
distance)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dataflows.race.board import leaderboard
from dataflows.race.driver import DriverUpdate
from dataflows.race.validate import validate
from schemas.model import Control, ControlKind, Lap, SessionKind, Weather
from tests.support.race_builder import Race


def _session(kind: SessionKind, cars: int = 5) -> Race:
    race = Race(cars=cars, laps=1)
    race.feed(replace(race.session, session_type=kind))
    return race


def _lap(race: Race, n: int, lap: int, crossing: int, time: int | None) -> None:
    """A lap with exactly this time (``None``: an out-lap or in-lap, which has none)."""
    update = race.drivers[n].update(Lap(f"r:lap:{n}:{lap}", "r", n, lap, crossing, time))
    assert isinstance(update, DriverUpdate), update
    race.feed(update)


def _part(race: Race, ts: int, kind: ControlKind, part: int) -> None:
    race.feed(Control(f"r:part:{part}:{kind}", "r", ts, kind, "", part=part))


def test_qualifying_orders_by_the_running_parts_best_lap_and_knocks_out_at_its_flag() -> None:
    race = _session(SessionKind.QUALIFYING)
    _part(race, 0, ControlKind.PART_START, 1)
    # laps: (car, lap, crossing, time); lap 1 is an out-lap (no time)
    for n in range(1, 6):
        _lap(race, n, 1, 100_000 + n * 1000, None)
    times = {1: 80_500, 2: 80_100, 3: 81_000, 4: 80_900, 5: 80_300}
    for n, t in times.items():
        _lap(race, n, 2, 180_000 + n * 1000, t)
    # car 3 overtakes car 1 on the road and goes faster than the others' laps: no overtake event
    _lap(race, 3, 3, 258_000, 79_000)
    board = leaderboard(race.state)
    assert board.session_type is SessionKind.QUALIFYING and board.part == 1 and board.hero is None
    assert [r.driver_number for r in board.rows] == [3, 2, 5, 1, 4]
    assert [r.gap_ms for r in board.rows] == [None, 1_100, 1_300, 1_500, 1_900]
    assert [r.interval_ms for r in board.rows] == [None, 1_100, 200, 200, 400]
    assert board.rows[0].best_lap_number == 3 and all(r.knocked_out is None for r in board.rows)
    assert board.cut == 5  # five cars: all go on from Q1 (advancing() caps it at the field)
    assert not race.events("OVERTAKE") and not race.events("PIT_STOP")

    # the deletion of car 3's lap arrives after it: the tower and the fastest lap are worked out again
    race.control(259_000, ControlKind.LAP_DELETED, driver=3, lap=3)
    board = leaderboard(race.state)
    assert [r.driver_number for r in board.rows] == [2, 5, 1, 4, 3]
    assert board.fastest_lap is not None and board.fastest_lap.driver_number == 2
    assert board.rows[-1].best_lap_ms == 81_000

    # the flag falls; a lap started before it still counts, then Q2 starts
    _lap(race, 4, 3, 610_000, 79_500)
    _part(race, 600_000, ControlKind.PART_END, 1)
    assert not race.state.finished and race.state.chequered_ms is None  # only Q3's flag ends it
    _part(race, 900_000, ControlKind.PART_START, 2)
    _lap(race, 1, 3, 1_000_000, 79_900)
    board = leaderboard(race.state)
    assert board.part == 2
    assert [(r.driver_number, r.best_lap_ms, r.knocked_out) for r in board.rows] == [
        (1, 79_900, None), (4, None, None), (2, None, None), (5, None, None), (3, None, None)]
    assert not race.events("LAST_LAP_HERO")


def test_knocked_out_cars_go_below_with_their_part(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataflows.race import qualifying

    monkeypatch.setattr(qualifying, "advancing", lambda field: (3, 2))  # 3 of 5 to Q2, 2 to Q3
    race = _session(SessionKind.QUALIFYING, cars=5)
    _part(race, 0, ControlKind.PART_START, 1)
    for n, t in {1: 80_000, 2: 81_000, 3: 82_000, 4: 83_000, 5: 84_000}.items():
        _lap(race, n, 1, 100_000 + n, t)
    board = leaderboard(race.state)
    assert board.cut == 3 and all(r.knocked_out is None for r in board.rows)  # Q1 still running
    _part(race, 600_000, ControlKind.PART_END, 1)
    _part(race, 900_000, ControlKind.PART_START, 2)
    _lap(race, 3, 2, 1_000_000, 79_000)
    board = leaderboard(race.state)
    assert [(r.driver_number, r.knocked_out) for r in board.rows] == [(3, None), (1, None), (2, None), (4, 1), (5, 1)]
    assert board.cut == 2 and [r.best_lap_ms for r in board.rows] == [79_000, None, None, 83_000, 84_000]


def test_practice_is_one_part_with_nobody_knocked_out_and_the_clock_runs() -> None:
    race = _session(SessionKind.PRACTICE, cars=3)
    for n, t in {1: 90_000, 2: 89_000, 3: 91_000}.items():
        _lap(race, n, 1, 95_000 + n, None)
        _lap(race, n, 2, 185_000 + n, t)
    race.feed(Control("r:clock:1", "r", 1_000, ControlKind.CLOCK, "", remaining_ms=3_599_000, clock_running=True))
    race.feed(Control("r:clock:0", "r", 0, ControlKind.CLOCK, "", remaining_ms=3_600_000))  # older: ignored
    board = leaderboard(race.state)
    assert board.session_type is SessionKind.PRACTICE and board.part == 0 and board.cut == 0
    assert [r.driver_number for r in board.rows] == [2, 1, 3]
    assert all(r.knocked_out is None for r in board.rows)
    assert (board.clock_remaining_ms, board.clock_ts_ms, board.clock_running) == (3_599_000, 1_000, True)
    # the laps reach the race distance (1 lap): no flag in a session ordered by best lap
    assert race.state.chequered_ms is None and not board.finished
    race.control(3_600_000, ControlKind.CHEQUERED_FLAG)
    assert leaderboard(race.state).finished


def test_part_and_clock_controls_are_validated() -> None:
    assert validate(Control("e", "r", 0, ControlKind.PART_START, "")) is not None
    assert validate(Control("e", "r", 0, ControlKind.PART_END, "", part=4)) is not None
    assert validate(Control("e", "r", 0, ControlKind.PART_START, "", part=2)) is None
    assert validate(Control("e", "r", 0, ControlKind.CLOCK, "")) is not None
    assert validate(Control("e", "r", 0, ControlKind.CLOCK, "", remaining_ms=-1)) is not None
    assert validate(Control("e", "r", 0, ControlKind.CLOCK, "", remaining_ms=60_000)) is None


def test_the_tower_carries_the_newest_weather_and_race_control_speaks_in_events() -> None:
    race = Race(cars=2, laps=3)
    race.feed(Weather("r:weather:60000", "r", 60_000, 27.9, 45.2, 50.0, 928.4, 2.4, 23, False))
    race.feed(Weather("r:weather:0", "r", 0, 26.0))  # an older measurement read later: kept out
    weather = leaderboard(race.state).weather
    assert weather is not None and (weather.ts_ms, weather.track_temp_c, weather.rainfall) == (60_000, 45.2, False)
    race.feed(Control("r:rcm:3", "r", 70_000, ControlKind.MESSAGE, "DRS ENABLED"))
    race.feed(Control("r:radio:x", "r", 71_000, ControlKind.TEAM_RADIO, "", driver_number=2,
                      clip_path="TeamRadio/B.mp3"))
    race.feed(Control("r:rcm:3", "r", 70_000, ControlKind.MESSAGE, "DRS ENABLED"))  # read twice: one event
    rc, radio = race.events("RACE_CONTROL"), race.events("TEAM_RADIO")
    assert [(e.message, e.ts_ms) for e in rc] == [("DRS ENABLED", 70_000)]
    assert [(e.driver_number, e.code, e.clip_path, e.message) for e in radio] == [
        (2, "BBB", "TeamRadio/B.mp3", "Team radio: BBB")]
