"""Qualifying standings on hand-built laps: phases, deleted laps, knock-outs, ties, no time."""

from __future__ import annotations

from dataflows.race.qualifying import Phase, QualiLap, advancing, classification, phase_of, standings

PHASES = [Phase(1, 0, 600_000), Phase(2, 900_000, 1_500_000), Phase(3, 1_800_000, 2_400_000)]


def lap(driver: int, n: int, crossing: int, time: int | None, deleted: bool = False) -> QualiLap:
    return QualiLap(driver, n, crossing, time, deleted)


def test_a_lap_counts_for_the_phase_it_started_in() -> None:
    assert phase_of(lap(1, 2, 650_000, 80_000), PHASES) == 1  # started before the flag, ended after
    assert phase_of(lap(1, 3, 700_000, 40_000), PHASES) is None  # started after the flag: in-lap
    assert phase_of(lap(1, 4, 960_000, 80_000), PHASES) is None  # started before Q2 began
    assert phase_of(lap(1, 5, 1_000_000, 80_000), PHASES) == 2
    assert phase_of(lap(1, 6, 1_000_000, None), PHASES) is None
    assert phase_of(lap(1, 7, 2_500_000, 80_000), [*PHASES[:2], Phase(3, 1_800_000)]) == 3  # running


def test_a_deleted_lap_does_not_count_and_the_car_keeps_its_other_best() -> None:
    laps = [lap(1, 2, 200_000, 70_000), lap(1, 4, 400_000, 69_000, deleted=True),
            lap(2, 2, 210_000, 69_500), lap(3, 2, 220_000, 68_000, deleted=True)]
    rows = standings(laps, PHASES[:1], [1, 2, 3], advance=(3, 3))[1]
    assert [(s.driver, s.best_ms, s.best_lap) for s in rows] == [(2, 69_500, 2), (1, 70_000, 2), (3, None, None)]
    assert [s.gap_ms for s in rows] == [0, 500, None] and [s.interval_ms for s in rows] == [None, 500, None]


def test_knock_outs_per_phase_ties_and_the_final_order() -> None:
    drivers = list(range(1, 21))
    laps = [lap(d, 2, 100_000 + d * 1000, 70_000 + d * 10) for d in drivers]  # Q1: car 1 fastest
    laps.append(lap(7, 3, 500_000, 70_000 + 60))  # ties car 6, set later: behind it
    laps += [lap(d, 8, 1_100_000 + d * 1000, 69_000 - d * 10) for d in range(1, 16)]  # Q2: reversed
    laps += [lap(d, 12, 2_000_000 + d * 1000, 68_000 + d) for d in range(6, 16)]  # Q3: 6..15 in order
    table = standings(laps, PHASES, drivers)
    assert [s.driver for s in table[1]][:8] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [s.driver for s in table[1] if s.knocked_out] == [16, 17, 18, 19, 20]
    assert [s.driver for s in table[2] if s.knocked_out] == [5, 4, 3, 2, 1]
    assert [s.driver for s in table[3]] == list(range(6, 16)) and not any(s.knocked_out for s in table[3])
    final = [s.driver for s in classification(table)]
    assert final == [*range(6, 16), 5, 4, 3, 2, 1, 16, 17, 18, 19, 20]
    assert [s.position for s in table[2]] == list(range(1, 16))


def test_a_running_phase_knocks_out_nobody_yet_and_cars_without_a_time_keep_the_previous_order() -> None:
    drivers = [1, 2, 3, 4]
    laps = [lap(d, 2, 100_000 + d, 70_000 + d) for d in drivers] + [lap(3, 5, 1_000_000, 69_000)]
    table = standings(laps, [PHASES[0], Phase(2, 900_000)], drivers, advance=(3, 2))
    assert [s.driver for s in table[1] if s.knocked_out] == [4]
    assert [(s.driver, s.best_ms) for s in table[2]] == [(3, 69_000), (1, None), (2, None)]
    assert not any(s.knocked_out for s in table[2])
    assert [s.driver for s in classification(table)] == [3, 1, 2, 4]


def test_how_many_cars_go_on() -> None:
    assert advancing(20) == (15, 10) and advancing(22) == (16, 10) and advancing(8) == (8, 8)
