"""Gap and interval in the timing tower (``dataflows.race.gaps``): virtual timing loops between the
crossings, crossing times at the line, one order for the rows and their figures."""

from __future__ import annotations

import random
from typing import Any

from dataflows.race.board import leaderboard
from dataflows.race.driver import DriverState, DriverUpdate
from dataflows.race.gaps import LoopTimes, Passages, behind, loops_per_lap, tower_gaps
from dataflows.race.processor import RaceProcessor
from schemas.model import Control, Lap, Leaderboard, LeaderboardRow, Telemetry
from simulator.race import RaceSimulator
from tests.support.race_builder import Race
from tests.support.tower_checks import inconsistencies

#: 3000 m with a loop every 150 m: 20 loops a lap, loop g at race progress g / 20
TRACK_M = 3000


def _rows(r: Race) -> list[LeaderboardRow]:
    return leaderboard(r.state).rows


def _figures(rows: list[LeaderboardRow]) -> list[tuple[int, int | None, int | None]]:
    return [(row.driver_number, row.gap_ms, row.interval_ms) for row in rows]


def _samples(r: Race, car: int, *samples: tuple[int, float]) -> None:
    """Telemetry of ``car`` at (session ms, race progress)."""
    for ts, progress in samples:
        lap = int(progress)
        r.tel(car, ts, lap + 1, progress - lap)


def _three_cars_after_lap_one() -> Race:
    assert loops_per_lap(TRACK_M) == 20
    r = Race(cars=3, laps=10, track_m=TRACK_M)
    for n, t in ((1, 90_000), (2, 90_500), (3, 91_300)):
        r.lap(n, 1, t)
    return r


def test_between_crossings_gap_and_interval_come_from_the_latest_loop() -> None:
    r = _three_cars_after_lap_one()
    assert _figures(_rows(r)) == [(1, None, None), (2, 500, 500), (3, 1300, 800)]
    # loop 21 (race progress 1.05) is passed half-way between samples at 1.04 and 1.06
    _samples(r, 1, (92_000, 1.04), (93_000, 1.06))  # loop 21 at 92.5 s
    _samples(r, 2, (92_800, 1.04), (93_800, 1.06))  # 93.3 s
    _samples(r, 3, (93_100, 1.04), (94_100, 1.06))  # 93.6 s
    rows = _rows(r)
    assert _figures(rows) == [(1, None, None), (2, 800, 800), (3, 1100, 300)]
    assert inconsistencies(leaderboard(r.state)) == []


def test_a_pass_between_crossings_reorders_the_rows_and_their_figures_with_them() -> None:
    r = _three_cars_after_lap_one()
    # car 3 passes car 2 between loops 21 and 22 (progress 1.05 and 1.10); fed in time order
    samples = [(1, 92_000, 1.04), (1, 93_000, 1.06), (1, 94_000, 1.09), (1, 95_000, 1.11),
               (2, 92_800, 1.04), (2, 93_800, 1.06), (2, 95_800, 1.09), (2, 96_800, 1.11),
               (3, 93_100, 1.04), (3, 94_100, 1.06), (3, 95_100, 1.09), (3, 96_100, 1.11)]
    seen: list[list[tuple[int, int | None, int | None]]] = []
    for n, ts, p in sorted(samples, key=lambda s: s[1]):
        _samples(r, n, (ts, p))
        board = leaderboard(r.state)
        assert inconsistencies(board) == []
        seen.append(_figures(board.rows))
    assert r.state.live.order == [1, 3, 2]
    # loop 22: car 1 at 94.5 s, car 3 at 95.6 s, car 2 at 96.3 s
    assert seen[-1] == [(1, None, None), (3, 1100, 1100), (2, 1800, 700)]
    seen_rows = {row for figures in seen for row in figures}
    # car 3 ahead on track, neither at loop 22 yet: car 2 led at loop 21, so as far as the loops
    # tell they are side by side (interval 0, never negative) ...
    assert (2, 1100, 0) in seen_rows
    # ... until car 3 passes loop 22, 200 ms before car 2's latest sample, still short of it
    assert (2, 1300, 200) in seen_rows


def test_at_the_line_gap_and_interval_are_the_crossing_time_differences() -> None:
    r = _three_cars_after_lap_one()
    # samples either side of the line put the crossings elsewhere than the lap records do
    _samples(r, 1, (179_000, 1.99), (181_000, 2.01))
    _samples(r, 2, (179_300, 1.99), (181_300, 2.01))
    _samples(r, 3, (179_900, 1.99), (181_900, 2.01))
    r.lap(1, 2, 180_137)
    r.lap(2, 2, 180_611)
    r.lap(3, 2, 181_003)
    assert _figures(_rows(r)) == [(1, None, None), (2, 474, 474), (3, 866, 392)]
    # the car above already past the next loops: measured at the line, where both have been
    r = _three_cars_after_lap_one()
    _samples(r, 1, (179_000, 1.99), (181_000, 2.01), (183_000, 2.07), (185_000, 2.13))
    r.lap(1, 2, 180_137)
    r.lap(2, 2, 180_611)
    assert _figures(_rows(r))[:2] == [(1, None, None), (2, 474, 474)]


def test_without_telemetry_the_tower_is_in_timing_line_order_with_crossing_figures() -> None:
    r = Race(cars=4, laps=10, track_m=TRACK_M)
    for n, lap, t in ((2, 1, 89_700), (1, 1, 90_000), (4, 1, 90_900), (3, 1, 91_500),
                      (1, 2, 179_000), (3, 2, 179_400), (2, 2, 179_800)):
        r.lap(n, lap, t)
    rows = _rows(r)
    assert [row.driver_number for row in rows] == r.state.timing.order() == [1, 3, 2, 4]
    assert [row.timing_position for row in rows] == [1, 2, 3, 4]
    # cars on lap 2: the crossing-time differences; car 4, not yet round, is 1.2 s behind car 2 at
    # the end of lap 1, and its gap is car 2's plus that interval
    assert _figures(rows) == [(1, None, None), (3, 400, 400), (2, 800, 400), (4, 2000, 1200)]


def test_a_car_lapped_between_crossings_shows_a_lap_and_the_next_lapped_car_an_interval() -> None:
    r = Race(cars=3, laps=10, track_m=TRACK_M)
    for n, lap, t in ((1, 1, 90_000), (2, 1, 150_000), (3, 1, 151_000), (1, 2, 180_000)):
        r.lap(n, lap, t)
    # at the line car 2 is 60 s down, on the same lap: car 1 crossed lap 2 after car 2 crossed lap 1
    assert [(row.gap_ms, row.gap_laps) for row in _rows(r)] == [(None, 0), (60_000, 0), (61_000, 0)]
    _samples(r, 1, (189_000, 2.49), (191_000, 2.51))  # loop 50 at 190 s
    _samples(r, 2, (199_000, 1.49), (201_000, 1.51))  # loop 30 at 200 s: car 1 was there 10 s before
    _samples(r, 3, (199_400, 1.49), (201_400, 1.51))
    rows = _rows(r)
    assert [(row.driver_number, row.gap_ms, row.gap_laps, row.interval_ms, row.interval_laps) for row in rows] == [
        (1, None, 0, None, 0), (2, None, 1, None, 1), (3, None, 1, 400, 0)]


def test_side_by_side_cars_keep_their_order_and_an_interval_that_never_goes_negative() -> None:
    r = Race(cars=2, laps=5)  # 5000 m: hysteresis 15 m = 0.003 lap, loops every 0.0303 lap
    jitter = [0.0004, -0.0003, 0.0005, -0.0004, 0.0002, -0.0005] * 15
    intervals = []
    for i, d in enumerate(jitter):
        ts = 10_000 + i * 250
        base = 0.30 + i * 0.001
        r.tel(1, ts, 1, base)
        r.tel(2, ts + 1, 1, base + d)
        board = leaderboard(r.state)
        assert [row.driver_number for row in board.rows] == [1, 2]
        assert inconsistencies(board) == []
        intervals.append(board.rows[1].interval_ms)
    assert r.state.live.swaps == 0
    assert r.state.cars[2].loops.latest() >= 12  # several loops passed side by side
    # a few metres apart at 1 m per 50 ms: a side-by-side interval, well under the 15 m hysteresis
    measured = [x for x in intervals if x is not None]
    assert len(measured) > 80 and all(0 <= x <= 150 for x in measured)


def test_loop_times_interpolate_between_samples_and_ignore_going_backwards() -> None:
    lt = LoopTimes()
    per_lap = 20
    prev, due = (-1, 0.0), 0.0
    for ts, p in ((1_000, 0.01), (2_000, 0.04), (3_000, 0.16), (4_000, 0.14), (5_000, 0.21)):
        if p >= due:
            due = lt.sample(prev[0], prev[1], ts, p, per_lap)
        prev = (ts, p)
        assert (lt.reached + 1) / per_lap - 1e-6 < due < (lt.reached + 1) / per_lap
    # loops 1, 2, 3 between 0.04 and 0.16 (at 0.05, 0.10, 0.15); loop 4 between 0.14 and 0.21
    assert (lt.start, lt.times, lt.reached) == (1, [2_083, 2_500, 2_917, 4_857], 4)
    car = Passages(per_lap, 0, [], lt)
    assert car.latest == 4 and car.at(0) is None and car.at(4) == 4_857 and car.at(5) is None


def test_a_loop_one_car_has_no_time_for_is_left_for_the_line() -> None:
    # the car ahead's telemetry began at loop 31 (the flow started mid-lap): loop 25 has no time
    ahead = Passages(20, 1, [90_000], LoopTimes(start=31, times=[95_000, 96_000], reached=32))
    me = Passages(20, 1, [90_700], LoopTimes(start=21, times=[91_000 + 900 * i for i in range(5)], reached=25))
    assert (ahead.latest, me.latest) == (32, 25)
    assert behind(me, ahead) == (700, 0)
    assert tower_gaps([ahead, me]) == [(None, 0, None, 0), (700, 0, 700, 0)]


def test_a_retired_car_breaks_the_chain() -> None:
    a = Passages(1, 2, [90_000, 180_000])
    c = Passages(1, 2, [91_000, 181_500])
    assert tower_gaps([a, None, c]) == [(None, 0, None, 0), (None, 0, None, 0), (1500, 0, None, 0)]


# ---------------------------------------------------------------- a whole simulated race

def _session_ms(record: Any) -> int:
    if isinstance(record, DriverUpdate):
        return record.lap.crossing_ms
    if isinstance(record, (Telemetry, Control)):
        return record.ts_ms
    return 0


def _simulated_boards(seed: int, laps: int, speed: float = 4.0) -> list[Leaderboard]:
    """Every leaderboard snapshot the race processor publishes over a simulated race replayed at
    ``speed`` times real time, a batch per 250 ms of session time, the throttle's trailing edge
    served as the flow does."""
    proc = RaceProcessor("sim")
    drivers: dict[int, DriverState] = {}
    boards: list[Leaderboard] = []
    batch: list[tuple[Any, None]] = []
    tick = 0

    def flush() -> None:
        now = tick * 0.25 / speed
        due = proc.notify_at_s()
        if due is not None and due <= now:
            boards.extend(o for o in proc.on_notify(due) if isinstance(o, Leaderboard))
        boards.extend(o for o in proc.on_batch(batch, now) if isinstance(o, Leaderboard))

    for record in RaceSimulator("sim", seed=seed, laps=laps).records():
        if isinstance(record, Lap):
            update = drivers.setdefault(record.driver_number, DriverState()).update(record)
            assert isinstance(update, DriverUpdate)
            record = update
        t = _session_ms(record) // 250
        if t != tick and batch:
            flush()
            batch = []
        tick = t
        batch.append((record, None))
    flush()
    return boards


def test_every_snapshot_of_a_simulated_race_reads_top_to_bottom() -> None:
    boards = _simulated_boards(seed=3, laps=12)
    assert len(boards) > 1000 and {b.reason for b in boards} == {"timing", "telemetry"}
    bad = [(b.ts_ms, b.reason, inconsistencies(b)) for b in boards if inconsistencies(b)]
    assert bad == []
    # and the figures are there: every running car but the leader has a gap once the field is
    # past the first loops after the start
    rows = [row for b in boards if b.ts_ms > 30_000 for row in b.rows[1:] if row.status in ("RUNNING", "PIT")]
    assert rows and sum(row.gap_ms is None and not row.gap_laps for row in rows) / len(rows) < 0.02


def test_loop_times_depend_on_each_cars_samples_alone() -> None:
    records = list(RaceSimulator("sim", seed=5, laps=2).records())
    telemetry = [r for r in records if isinstance(r, Telemetry)]
    session = records[0]

    def loops(order: list[Telemetry], batch: int) -> dict[int, tuple[int, list[int]]]:
        proc = RaceProcessor("sim")
        items = [(session, None)] + [(t, None) for t in order]
        for i in range(0, len(items), batch):
            proc.on_batch(items[i:i + batch], float(i))
        assert proc.state is not None
        return {n: (c.loops.start, list(c.loops.times)) for n, c in proc.state.cars.items()}

    # another interleaving of the cars (each car's own samples in order), in other batches
    shuffled = sorted(telemetry, key=lambda t: (t.ts_ms // 5_000, random.Random(t.driver_number).random(), t.ts_ms))
    reference = loops(telemetry, 1)
    assert reference == loops(shuffled, 997)
    assert all(len(times) > 30 for _start, times in reference.values())


def test_a_finisher_counts_up_to_its_flag_line() -> None:
    # loops past the flag (the in-lap) do not count: measured at the line, where it finished
    lt = LoopTimes(start=41, times=[181_000, 182_000, 183_000], reached=43)
    winner = Passages(20, 2, [90_000, 180_000], lt, upto=40)
    assert (winner.latest, winner.latest_ms, winner.at(41)) == (40, 180_000, None)
    second = Passages(20, 2, [90_400, 180_900], upto=40)
    assert tower_gaps([winner, second]) == [(None, 0, None, 0), (900, 0, 900, 0)]
