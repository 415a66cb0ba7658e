"""Race-level metrics on hand-built scenarios (DESIGN.md definitions)."""

from __future__ import annotations

import itertools

from dataflows.outputs import Rejected
from dataflows.race.board import leaderboard
from dataflows.race.driver import DriverState
from dataflows.race.processor import Throttle
from dataflows.race.state import applied_of, race_version
from dataflows.race.validate import validate
from schemas.model import Control, ControlKind, Lap, Leaderboard, Telemetry, TrackStatus
from tests.support.race_builder import Race


def board(race: Race) -> Leaderboard:
    return leaderboard(race.state)


def test_order_gap_and_interval_at_the_timing_line() -> None:
    r = Race(cars=3)
    r.lap(1, 1, 90_000)
    r.lap(2, 1, 90_500)
    r.lap(3, 1, 91_300)
    rows = board(r).rows
    assert [row.code for row in rows] == ["AAA", "BBB", "CCC"]
    assert [(row.gap_ms, row.interval_ms) for row in rows] == [(None, None), (500, 500), (1300, 800)]
    assert [row.timing_position for row in rows] == [1, 2, 3]


def test_lapped_car_shows_laps_not_time() -> None:
    r = Race(cars=2, laps=10)
    r.lap(1, 1, 90_000)
    r.lap(2, 1, 150_000)
    r.lap(1, 2, 180_000)
    r.lap(1, 3, 270_000)
    r.lap(2, 2, 280_000)  # leader crossed lap 3 before car 2 crossed lap 2: one lap down
    row = {x.code: x for x in board(r).rows}["BBB"]
    assert (row.gap_ms, row.gap_laps) == (None, 1)
    assert (row.interval_ms, row.interval_laps) == (None, 1)


def test_retired_car_ranks_behind_running_cars_and_is_classified_retired() -> None:
    r = Race(cars=3, laps=2)
    for n, t in ((2, 89_000), (1, 90_000), (3, 91_000)):
        r.lap(n, 1, t)
    r.control(120_000, ControlKind.RETIREMENT, driver=2)
    rows = board(r).rows
    assert [x.code for x in rows] == ["AAA", "CCC", "BBB"]
    assert rows[-1].status == "RETIRED" and rows[-1].timing_position == 3
    assert [e.driver_number for e in r.events("RETIREMENT")] == [2]
    r.lap(1, 2, 180_000)
    r.lap(3, 2, 181_000)
    final = [(c.code, c.laps, c.status) for c in r.events("CLASSIFICATION")[0].classification or []]
    assert final == [("AAA", 2, "Finished"), ("CCC", 2, "Finished"), ("BBB", 1, "Retired")]


def test_retirement_overtake_kind() -> None:
    r = Race(cars=2, laps=5)
    r.lap(1, 1, 90_000)
    r.lap(2, 1, 90_400)
    r.lap(2, 2, 180_000)  # car 1 slows with a problem: car 2 crosses first...
    r.control(200_000, ControlKind.RETIREMENT, driver=1)  # ...and car 1 never completes lap 2
    assert r.overtakes() == {(2, 2, 1, "RETIREMENT", False)}


def test_retirement_message_ahead_of_the_cars_last_laps() -> None:
    """Race control's retirement can be read before the car's last laps (another topic)."""
    r = Race(cars=2, laps=5)
    r.lap(2, 1, 90_400)
    r.control(200_000, ControlKind.RETIREMENT, driver=1, lap=2)  # car 1 retires on lap 2...
    r.lap(2, 2, 180_000)
    assert r.overtakes() == set()  # ...but its lap 1 has not arrived: nothing can be decided yet
    r.lap(1, 1, 90_000)
    assert r.overtakes() == {(2, 2, 1, "RETIREMENT", False)}
    assert [e.lap for e in r.events("RETIREMENT")] == [2]


def test_fastest_lap_tie_goes_to_the_earlier_lap_whatever_the_processing_order() -> None:
    for first in (1, 2):
        r = Race(cars=2, laps=5)
        second = 3 - first
        r.lap(first, 1, 90_000 if first == 1 else 90_500, 90_000)
        r.lap(second, 1, 90_000 if second == 1 else 90_500, 90_000)
        fl = board(r).fastest_lap
        assert fl is not None and (fl.driver_number, fl.lap_time_ms) == (1, 90_000)


def test_deleted_lap_is_not_the_fastest() -> None:
    r = Race(cars=2, laps=5)
    r.lap(1, 1, 85_000, 85_000, deleted=True)
    r.lap(2, 1, 90_000, 90_000)
    fl = board(r).fastest_lap
    assert fl is not None and fl.driver_number == 2


def test_pit_induced_swap_is_kind_pit() -> None:
    r = Race(cars=2, laps=5)
    r.lap(1, 1, 90_000)
    r.lap(2, 1, 91_000)
    r.lap(1, 2, 180_000, pit_in=True)
    r.lap(2, 2, 181_000)
    r.lap(2, 3, 271_000)
    r.lap(1, 3, 292_000, 112_000, pit_out=True, pit_lane_ms=22_000)
    assert r.overtakes() == {(3, 2, 1, "PIT", False)}
    pits = r.events("PIT_STOP")
    assert [(e.driver_number, e.lap, e.pit_lane_ms) for e in pits] == [(1, 2, 22_000)]


def test_on_track_overtake_and_under_safety_car_flag() -> None:
    r = Race(cars=3, laps=5)
    r.lap(1, 1, 90_000)
    r.lap(2, 1, 90_500)
    r.lap(3, 1, 91_000)
    r.lap(2, 2, 180_000)
    r.lap(1, 2, 180_300)  # 2 passes 1 on track
    r.lap(3, 2, 185_000)
    r.lap(3, 3, 280_000, 95_000, track_status=TrackStatus.SC)  # 3 passes both under SC
    r.lap(2, 3, 280_500, track_status=TrackStatus.SC)
    r.lap(1, 3, 281_000, track_status=TrackStatus.SC)
    assert r.overtakes() == {
        (2, 2, 1, "ON_TRACK", False),
        (3, 3, 2, "ON_TRACK", True),
        (3, 3, 1, "ON_TRACK", True),
    }


def test_first_lap_overtakes_are_against_the_grid() -> None:
    r = Race(cars=2, laps=5, grid=[2, 1])
    r.lap(1, 1, 90_000)
    r.lap(2, 1, 90_200)
    assert r.overtakes() == {(1, 1, 2, "ON_TRACK", False)}


def test_overtakes_do_not_depend_on_the_processing_order() -> None:
    laps = [(1, 1, 90_000), (2, 1, 90_500), (3, 1, 91_000),
            (2, 2, 180_000), (3, 2, 180_100), (1, 2, 180_300),
            (3, 3, 270_000), (1, 3, 270_100), (2, 3, 270_200)]
    results = set()
    # every interleaving that keeps each car's own laps in order
    for perm in itertools.permutations(range(len(laps)), len(laps)):
        seq = [laps[i] for i in perm]
        if any(sum(1 for x in seq[: seq.index(item)] if x[0] == item[0]) != item[1] - 1 for item in seq):
            continue
        r = Race(cars=3, laps=5)
        for n, lap, t in seq:
            r.lap(n, lap, t)
        results.add(frozenset(r.overtakes()))
        if len(results) > 1:
            break
    assert len(results) == 1
    assert {(o[0], o[1], o[2]) for o in next(iter(results))} == {
        (2, 2, 1), (2, 3, 1), (3, 3, 2), (3, 1, 2)}


def test_side_by_side_in_telemetry_does_not_burst_swaps() -> None:
    r = Race(cars=2, laps=5)
    jitter = [0.0004, -0.0003, 0.0005, -0.0004, 0.0002, -0.0005] * 10  # a few metres either way
    for i, d in enumerate(jitter):
        ts = 10_000 + i * 250
        base = 0.30 + i * 0.001
        r.tel(1, ts, 1, base)
        r.tel(2, ts + 1, 1, base + d)
    assert r.state.live.swaps == 0
    telemetry_boards = [o for o in r.outputs if isinstance(o, Leaderboard) and o.reason == "telemetry"]
    # the builder's clock moves 1 s per record, so every telemetry sample may go out: the running
    # order in all of them is unchanged
    assert telemetry_boards and all([row.driver_number for row in b.rows] == [1, 2] for b in telemetry_boards)
    r.tel(2, 30_000, 1, 0.40)  # now clearly ahead (50 m)
    r.tel(1, 30_001, 1, 0.39)
    assert r.state.live.order == [2, 1] and r.state.live.swaps == 1


def test_car_finishing_a_lap_behind() -> None:
    r = Race(cars=2, laps=3)
    r.lap(1, 1, 90_000)
    r.lap(2, 1, 150_000)
    r.lap(1, 2, 180_000)
    r.lap(1, 3, 270_000)  # chequered flag
    r.lap(2, 2, 290_000)  # car 2 takes the flag one lap down
    cls = r.events("CLASSIFICATION")[0].classification or []
    assert [(c.code, c.laps, c.status) for c in cls] == [("AAA", 3, "Finished"), ("BBB", 2, "+1 Lap")]
    assert [e.driver_number for e in r.events("FINISHED")] == [1, 2]
    assert board(r).final


def test_hero_decided_by_the_last_car_to_finish() -> None:
    r = Race(cars=3, laps=2)
    r.lap(1, 1, 90_000)
    r.lap(2, 1, 91_000)
    r.lap(3, 1, 92_200)
    r.lap(1, 2, 181_000, 91_000)
    hero = board(r).hero
    assert hero is not None and (hero.driver_number, hero.final) == (1, False)
    r.lap(2, 2, 181_500, 90_500)
    r.lap(3, 2, 181_600, 89_400)  # the last car to finish has the fastest final lap
    hero = board(r).hero
    assert hero is not None and (hero.driver_number, hero.lap_time_ms, hero.final) == (3, 89_400, True)
    kinds = [(e.driver_number, e.provisional) for e in r.events("LAST_LAP_HERO")]
    assert kinds == [(1, True), (2, True), (3, False)]


def test_hero_positions_gained_on_the_last_lap_and_events_in_crossing_order() -> None:
    r = Race(cars=3, laps=2)
    r.lap(1, 1, 90_000)
    r.lap(2, 1, 91_000)
    r.lap(3, 1, 92_000)
    r.lap(1, 2, 181_000, 91_000)
    r.lap(2, 2, 181_500, 90_500)  # arrives before car 3's lap, though car 3 crossed first
    r.lap(3, 2, 181_400, 89_400)  # passes car 2 on the last lap
    hero = board(r).hero
    assert hero is not None and (hero.driver_number, hero.positions_gained, hero.final) == (3, 1, True)
    kinds = [(e.driver_number, e.provisional) for e in r.events("LAST_LAP_HERO")]
    assert kinds == [(1, True), (3, True), (3, False)]  # as of each crossing, whatever the arrival order
    finished = [(e.driver_number, e.position) for e in r.events("FINISHED")]
    assert finished == [(1, 1), (3, 2), (2, 3)]


def test_hero_is_final_when_every_running_car_has_finished() -> None:
    r = Race(cars=3, laps=2)
    r.lap(3, 1, 85_000, 85_000)
    r.lap(1, 1, 90_000)
    r.lap(2, 1, 91_000)
    r.control(120_000, ControlKind.RETIREMENT, driver=3)  # never takes the flag
    r.lap(1, 2, 180_000, 90_000)
    r.lap(2, 2, 180_500, 89_500)
    hero = board(r).hero
    assert hero is not None and (hero.driver_number, hero.final) == (2, True)
    assert board(r).final


def test_unknown_driver_is_rejected() -> None:
    r = Race(cars=2)
    out = r.feed(Telemetry("x", "r", 99, 1000, 1, 0.1, 0, 0, 100, 9000, 3, 50, False, False))
    assert len(out) == 1 and isinstance(out[0], Rejected)
    assert out[0].error_type == "UNKNOWN_DRIVER" and "99" in out[0].reason


def test_records_before_the_session_wait_for_it() -> None:
    from dataflows.race.processor import RaceProcessor

    proc = RaceProcessor("r")
    lap = DriverState().update(Lap("r:lap:1:1", "r", 1, 1, 90_000, 90_000))
    assert proc.on_batch([(lap, None)], 0.0) == []
    session = Race(cars=1).session
    out = proc.on_batch([(session, None)], 1.0)
    assert proc.state is not None and proc.state.timing.cars[1].laps == 1
    assert any(isinstance(o, Leaderboard) for o in out)


def test_records_held_for_the_session_keep_their_references_and_pickle_them_kept() -> None:
    import pickle

    from dataflows.race.processor import RaceProcessor

    class Unpicklable:  # like a broker message: only the processor's keep_ref makes it picklable
        def __reduce__(self) -> str:
            raise TypeError("not picklable")

    raw = Unpicklable()
    proc = RaceProcessor("r", keep_ref=_kept)
    lap = DriverState().update(Lap("r:lap:1:1", "r", 1, 1, 90_000, 90_000))
    proc.on_batch([(lap, raw)], 0.0)
    assert proc.pending[0][1] is raw  # held as it came: nothing converted per record
    # a snapshot pickles the processor: keep_ref turns what it holds into something picklable
    copy = pickle.loads(pickle.dumps(proc))
    assert copy.pending == [(lap, "kept")] and copy.race_id == "r" and copy.throttle == proc.throttle
    out = copy.on_batch([(Race(cars=1).session, None)], 1.0)
    assert copy.state is not None and copy.state.timing.cars[1].laps == 1 and out


def _kept(ref: object) -> str:
    return "kept"


def test_flag_state_and_lap_counter() -> None:
    r = Race(cars=2, laps=10)
    r.control(100, ControlKind.TRACK_STATUS, TrackStatus.SC)
    r.lap(1, 1, 90_000)
    b = board(r)
    assert b.track_status == TrackStatus.SC and b.lap == 2
    assert [e.track_status for e in r.events("FLAG")] == [TrackStatus.SC]


def test_version_carries_session_time_and_records_applied() -> None:
    r = Race(cars=2, laps=10)
    r.lap(1, 1, 90_000)
    r.tel(2, 1000, 1, 0.1)
    assert board(r).version == race_version(90_000, 3)  # session, lap, telemetry
    assert applied_of(board(r).version) == 3


def test_version_never_goes_backwards_when_a_restart_reads_fewer_records() -> None:
    """Finding 3: a flow restarted from a snapshot that re-read fewer records (telemetry the broker
    had lost) must still replace what the first run wrote, up to its final state."""
    def run(telemetry_every: int) -> list[Leaderboard]:
        r = Race(cars=2, laps=3)
        boards = []
        for lap in range(1, 4):
            for k in range(0, 40, telemetry_every):
                for n in (1, 2):
                    r.tel(n, (lap - 1) * 90_000 + k * 2_000 + n, lap, k / 40)
            for n in (1, 2):
                r.lap(n, lap, lap * 90_000 + n * 500)
            boards.append(board(r))
        return boards

    first, restarted = run(1), run(4)  # the restart saw a quarter of the telemetry
    assert restarted[-1].final and not first[1].final
    assert restarted[-1].version > max(b.version for b in first[:-1])
    versions = [b.version for b in restarted]
    assert versions == sorted(versions)


# ---------------------------------------------------------------- per-driver state


def test_driver_sequence_retry_and_rejection() -> None:
    s = DriverState()
    first = Lap("a", "r", 7, 1, 90_000, 90_000)
    assert not isinstance(s.update(first), Rejected)
    assert s.update(first) is None  # retry: harmless
    back = s.update(Lap("b", "r", 7, 1, 91_000, 91_000))
    assert isinstance(back, Rejected) and back.error_type == "OUT_OF_SEQUENCE"
    gap = s.update(Lap("c", "r", 7, 4, 360_000, 90_000))
    assert isinstance(gap, Rejected)


def test_red_flag_pit_lane_stay_is_not_a_stop_and_retiring_in_lap_is_not_either() -> None:
    s = DriverState()
    s.update(Lap("1", "r", 7, 1, 90_000, 90_000))
    s.update(Lap("2", "r", 7, 2, 200_000, 110_000, pit_in=True, track_status=TrackStatus.RED))
    u = s.update(Lap("3", "r", 7, 3, 1_400_000, 1_200_000, pit_out=True))
    assert not isinstance(u, Rejected) and u is not None and u.pit_stop_lap is None and u.pit_count == 0
    u = s.update(Lap("4", "r", 7, 4, 1_500_000, 100_000, pit_in=True))
    assert u is not None and not isinstance(u, Rejected) and u.pit_stop_lap is None  # no out-lap yet
    assert s.pit_count == 0


def test_throttle_leading_and_trailing_edge() -> None:
    t = Throttle(min_interval_s=0.25)
    assert t.offer(1.0)  # leading edge goes out at once
    assert not t.offer(1.1)
    assert t.deadline() == 1.25
    assert not t.due(1.2)
    assert t.due(1.25)  # trailing edge: the held change goes out
    assert not t.due(2.0)


def test_validation_reasons() -> None:
    assert validate(Lap("e", "r", 1, 0, 1, 90_000)) is not None
    assert "negative lap time" in (validate(Lap("e", "r", 1, 2, 1, -1)) or "")
    assert validate(Lap("e", "r", 1, 2, 1, 90_000)) is None
    assert "progress" in (validate(Telemetry("e", "r", 1, 0, 1, 1.5, 0, 0, 0, 0, 0, 0, False, False)) or "")


def test_chequered_flag_event_comes_from_race_control_and_the_flag_from_the_leader() -> None:
    r = Race(cars=2, laps=2)
    r.lap(1, 1, 90_000)
    r.lap(2, 1, 91_000)
    r.lap(1, 2, 180_000)  # the leader completes the distance: the flag has fallen
    assert r.state.chequered_ms == 180_000 and board(r).finished
    assert r.events("CHEQUERED_FLAG") == []
    r.control(180_000, ControlKind.CHEQUERED_FLAG)
    assert [e.ts_ms for e in r.events("CHEQUERED_FLAG")] == [180_000]
    r.lap(2, 2, 181_000)
    assert board(r).final


def test_fastest_lap_events_do_not_depend_on_arrival_order() -> None:
    laps = [(1, 1, 90_000, 90_000), (2, 1, 90_500, 90_500), (2, 2, 179_500, 89_000), (1, 2, 179_600, 89_600),
            (1, 3, 268_000, 88_400), (2, 3, 268_400, 88_900)]
    seen = []
    for order in (laps, sorted(laps, key=lambda x: (x[0], x[1]))):  # by crossing; car 1 first
        r = Race(cars=2, laps=3)
        for n, lap, t, lt in order:
            r.lap(n, lap, t, lt)
        seen.append([(e.driver_number, e.lap, e.lap_time_ms) for e in r.events("FASTEST_LAP")])
    assert seen[0] == seen[1] == [(1, 1, 90_000), (2, 2, 89_000), (1, 3, 88_400)]


def test_fastest_lap_event_waits_until_no_earlier_lap_can_arrive() -> None:
    r = Race(cars=2, laps=5)
    r.lap(1, 1, 90_000, 90_000)
    assert board(r).fastest_lap is not None  # the tower shows it at once...
    assert r.events("FASTEST_LAP") == []  # ...the event waits: car 2 may still cross before 90 s
    r.tel(2, 90_250, 1, 0.99)  # car 2 is seen still on lap 1 after 90 s
    assert [e.driver_number for e in r.events("FASTEST_LAP")] == [1]


def test_a_retired_car_shows_no_gap_or_interval() -> None:
    r = Race(cars=3, laps=10)
    for n, t in ((1, 90_000), (2, 90_500), (3, 91_000)):
        r.lap(n, 1, t)
    r.lap(1, 2, 180_000)
    r.lap(3, 2, 180_400)  # car 3 passes car 2, which stops on track
    r.control(185_000, ControlKind.RETIREMENT, driver=2)
    rows = {row.driver_number: row for row in board(r).rows}
    assert rows[2].status == "RETIRED" and rows[2].position == 3
    assert (rows[2].gap_ms, rows[2].gap_laps, rows[2].interval_ms, rows[2].interval_laps) == (None, 0, None, 0)
    assert rows[3].gap_ms == 400 and rows[3].interval_ms == 400


def test_the_state_says_what_changed_since_the_last_snapshot() -> None:
    r = Race(cars=2)  # the session's snapshot went out
    state = r.state
    assert not state.timing_changed and not state.order_changed
    assert state.apply(Telemetry("t", "r", 1, 1_000, 1, 0.1, 0, 0, 100, 9000, 3, 50, False, False)) == []
    assert state.order_changed and not state.timing_changed
    state.published()
    assert not state.order_changed
    assert state.apply(DriverState().update(Lap("r:lap:1:1", "r", 1, 1, 90_000, 90_000))) == []
    assert state.timing_changed and state.take_lap_charts() == {1: [1]} and state.take_lap_charts() == {}


# ------------------------------------------------------------------------------ lap verdicts


def test_a_lap_deleted_after_it_went_out_gives_the_fastest_lap_back_to_the_next_best() -> None:
    r = Race(cars=2, laps=5)
    r.lap(1, 1, 90_000, 90_000)
    r.lap(2, 1, 91_000, 91_000)
    r.lap(1, 2, 178_000, 88_000)  # the fastest lap
    r.lap(2, 2, 180_000, 89_000)
    r.lap(1, 3, 268_000, 90_000)
    r.lap(2, 3, 270_000, 90_000)
    assert (r.state.fastest.driver_number, r.state.fastest.lap) == (1, 2)
    assert [(e.driver_number, e.lap) for e in r.events("FASTEST_LAP")][-1] == (1, 2)
    r.control(275_000, ControlKind.LAP_DELETED, driver=1, lap=2)
    assert (r.state.fastest.driver_number, r.state.fastest.lap, r.state.fastest.lap_time_ms) == (2, 2, 89_000)
    assert r.state.cars[1].best_lap_ms == 90_000
    # the event that corrects it names the lap that holds the fastest lap now
    assert [(e.driver_number, e.lap, e.lap_time_ms) for e in r.events("FASTEST_LAP")][-1] == (2, 2, 89_000)
    r.lap(1, 4, 356_000, 88_500)  # the car's best again, but the deleted lap never comes back by itself
    assert r.state.cars[1].best_lap_ms == 88_500 and r.state.fastest.lap == 4
    r.control(280_000, ControlKind.LAP_REINSTATED, driver=1, lap=2)
    assert (r.state.fastest.driver_number, r.state.fastest.lap) == (1, 2) and r.state.cars[1].best_lap_ms == 88_000


def test_a_verdict_that_comes_before_its_lap_is_applied_when_the_lap_comes() -> None:
    r = Race(cars=2, laps=5)
    r.lap(1, 1, 90_000, 90_000)
    r.lap(2, 1, 91_000, 91_000)
    r.control(170_000, ControlKind.LAP_DELETED, driver=1, lap=2)  # another partition: read first
    r.lap(1, 2, 178_000, 80_000)
    r.lap(2, 2, 180_000, 89_000)
    r.lap(1, 3, 268_000, 90_000)
    r.lap(2, 3, 270_000, 90_000)
    assert (r.state.fastest.driver_number, r.state.fastest.lap) == (2, 2)
    assert r.state.cars[1].best_lap_ms == 90_000
    assert all(e.lap_time_ms != 80_000 for e in r.events("FASTEST_LAP"))


def test_a_verdict_without_car_and_lap_is_invalid() -> None:
    def verdict(driver: int | None, lap: int | None) -> str | None:
        return validate(Control("e", "r", 1, ControlKind.LAP_DELETED, "", driver_number=driver, lap=lap))

    assert "without driver_number and lap" in (verdict(1, None) or "")
    assert verdict(None, 3) is not None and verdict(1, 0) is not None
    assert verdict(1, 3) is None
