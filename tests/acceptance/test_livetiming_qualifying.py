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
