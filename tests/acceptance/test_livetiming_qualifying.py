"""The 2025 Dutch GP qualifying capture (Q1, Q2, Q3; one lap deleted for track limits) against the
official result (Ergast raceId 1159, round 15): per phase the order and every best time, the cars
knocked out in each phase, the pole and the final order."""

from __future__ import annotations

import csv
from pathlib import Path

from dataflows.race.qualifying import classification, standings
from simulator.sources.livetiming import FeedConverter, in_arrival_order, read_capture, time_ms

RACE_ID = "1159"


def _official(ergast: Path) -> list[dict[str, str]]:
    codes = {r["driverId"]: r["code"] for r in csv.DictReader((ergast / "drivers.csv").open(encoding="utf-8"))}
    rows = [r for r in csv.DictReader((ergast / "qualifying.csv").open(encoding="utf-8")) if r["raceId"] == RACE_ID]
    for r in rows:
        r["code"] = codes[r["driverId"]]
    return sorted(rows, key=lambda r: int(r["position"]))


def test_dutch_qualifying_phases_match_the_official_result(shared_data: Path) -> None:
    conv = FeedConverter("q")
    conv.feed_all(in_arrival_order(read_capture(
        shared_data / "livetiming" / "recordings" / "2025_dutch_qualifying.txt")))
    assert conv.session_type == "Qualifying"
    assert [p.number for p in conv.parts] == [1, 2, 3] and all(p.end_ms is not None for p in conv.parts)
    table = standings(conv.qualifying_laps(), conv.parts, sorted(conv.cars))
    official = _official(shared_data / "ergast")
    # Ergast numbers a car by its driver's permanent number (VER 33; the car ran as 1): compare codes
    code = conv.code

    for q in (1, 2, 3):
        # the official order of the phase: its time, ties to the driver ahead in the final result
        timed = sorted((r for r in official if r[f"q{q}"] != "\\N"),
                       key=lambda r: (time_ms(r[f"q{q}"]), int(r["position"])))
        ours = [s for s in table[q] if s.best_ms is not None]
        assert [(code(s.driver), s.best_ms) for s in ours] == [(r["code"], time_ms(r[f"q{q}"])) for r in timed], q
        assert ours[0].gap_ms == 0 and all(s.gap_ms == s.best_ms - ours[0].best_ms for s in ours)

    knocked = {q: [code(s.driver) for s in table[q] if s.knocked_out] for q in (1, 2, 3)}
    assert knocked[1] == [r["code"] for r in official[15:]]  # P16-P20
    assert knocked[2] == [r["code"] for r in official[10:15]]  # P11-P15
    assert knocked[3] == []
    # STR's only lap was deleted for track limits: no time, last in Q1
    assert table[1][-1].driver == 18 and table[1][-1].best_ms is None and (18, 3, None) in conv.deleted
    assert code(table[3][0].driver) == official[0]["code"] == "PIA"  # pole
    assert [code(s.driver) for s in classification(table)] == [r["code"] for r in official]


def test_the_dataflow_shows_the_qualifying_tower_as_the_timing_screens_do(shared_data: Path) -> None:
    """The same capture, converted as a live run would and applied by the race dataflow's own
    logic: the tower is in the order of the part running (Q1-knocked-out cars below it, marked),
    gaps to the best time, the final tower in the official order with each car's time of the part
    that set its place, the session clock, no hero and no overtakes."""
    from dataflows.race.board import leaderboard
    from dataflows.race.driver import DriverState, DriverUpdate
    from dataflows.race.processor import RaceProcessor
    from schemas.model import Control, ControlKind, Lap, RaceEvent, SessionKind
    from simulator.sources.incremental import convert_incrementally
    from simulator.sources.livetiming import parse_recording

    path = shared_data / "livetiming" / "recordings" / "2025_dutch_qualifying.txt"
    records = convert_incrementally(parse_recording(path.read_text(encoding="utf-8-sig").splitlines()), "q")
    proc = RaceProcessor("q")
    drivers: dict[int, DriverState] = {}
    events: list[RaceEvent] = []
    during_q2 = None
    for i, record in enumerate(records):
        item = record
        if isinstance(record, Lap):
            update = drivers.setdefault(record.driver_number, DriverState()).update(record)
            assert isinstance(update, DriverUpdate), update
            item = update
        events += [o for o in proc.on_batch([(item, None)], float(i)) if isinstance(o, RaceEvent)]
        state = proc.state
        if during_q2 is None and state is not None and 2 in state.parts and state.parts[2][1] is None \
                and state.ts_ms > state.parts[2][0] + 600_000:
            during_q2 = leaderboard(state)
    parts = [r for r in records if isinstance(r, Control) and r.kind in (ControlKind.PART_START, ControlKind.PART_END)]
    assert [(r.kind, r.part) for r in parts] == [(k, q) for q in (1, 2, 3) for k in (ControlKind.PART_START,
                                                                                     ControlKind.PART_END)]
    official = _official(shared_data / "ergast")
    board = leaderboard(proc.state)
    assert board.session_type is SessionKind.QUALIFYING and board.part == 3 and board.hero is None
    assert [r.code for r in board.rows] == [r["code"] for r in official]
    for row, r in zip(board.rows, official, strict=True):
        part = 3 if row.position <= 10 else 2 if row.position <= 15 else 1
        assert row.knocked_out == (None if part == 3 else part), row
        assert row.best_lap_ms == time_ms(r[f"q{part}"]), (row.code, row.best_lap_ms, r[f"q{part}"])
    first, second = board.rows[0], board.rows[1]
    assert first.gap_ms is None and second.gap_ms == second.best_lap_ms - first.best_lap_ms
    assert board.clock_remaining_ms == 0 and not board.clock_running
    assert board.finished  # Q3's flag ended the session
    assert not [e for e in events if e.type in ("OVERTAKE", "LAST_LAP_HERO", "PIT_STOP", "RETIREMENT")]
    assert not [r for r in records if isinstance(r, Control) and r.kind is ControlKind.RETIREMENT]

    # ten minutes into Q2: fifteen cars in Q2's order, the five knocked out in Q1 below them, the clock running
    assert during_q2 is not None and during_q2.part == 2 and during_q2.cut == 10 and during_q2.clock_running
    assert [r.knocked_out for r in during_q2.rows] == [None] * 15 + [1] * 5
    assert [r.code for r in during_q2.rows[15:]] == [r["code"] for r in official[15:]]
    timed = [r.best_lap_ms for r in during_q2.rows[:15] if r.best_lap_ms is not None]
    assert timed == sorted(timed) and len(timed) >= 10
