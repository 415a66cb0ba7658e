"""Lap table → input records (pure), on small synthetic tables."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from schemas.model import Control, ControlKind, Lap, Session, TrackStatus
from simulator.report import build_report
from simulator.sources.laptables import (
    LapRow,
    ReplayError,
    build_race,
    fastf1_rows,
    most_severe,
    read_table,
    tidy_rows,
)

TIDY = """driver_code,driver_number,team,lap,lap_time_ms,position,pit_in,compound,tyre_life_laps,\
track_status,fastf1_pit_in,fastf1_pit_out
AAA,1,Ferrari,1,100000,1,False,SOFT,1,1,False,True
BBB,2,Mercedes,1,101000,2,False,SOFT,1,1,False,True
CCC,3,Williams,1,102000,3,False,SOFT,1,1,False,True
AAA,1,Ferrari,2,100000,1,False,SOFT,2,4,True,False
BBB,2,Mercedes,2,100500,2,False,SOFT,2,64,False,False
CCC,3,Williams,2,110000,3,False,SOFT,2,4,True,False
AAA,1,Ferrari,3,120000,2,False,HARD,1,4,False,True
BBB,2,Mercedes,3,100000,1,False,SOFT,3,1,False,False
AAA,1,Ferrari,4,95000,2,False,HARD,2,1,False,False
BBB,2,Mercedes,4,96000,1,False,SOFT,4,1,False,False
"""


def _race(text: str = TIDY) -> list[object]:
    rows = tidy_rows(pl.read_csv(io.StringIO(text), infer_schema_length=0))
    return list(build_race(rows, "r").records())


def test_most_severe() -> None:
    assert most_severe("64") is TrackStatus.SC
    assert most_severe("1254") is TrackStatus.RED
    assert most_severe("267") is TrackStatus.VSC
    assert most_severe("0") is TrackStatus.GREEN


def test_tidy_table_to_records_in_session_time_order() -> None:
    records = _race()
    assert isinstance(records[0], Session)
    session = records[0]
    assert session.total_laps == 4 and session.grid == [1, 2, 3]
    assert [d.code for d in session.drivers] == ["AAA", "BBB", "CCC"]
    assert session.drivers[0].team_colour != "888888"
    times = [getattr(r, "crossing_ms", getattr(r, "ts_ms", 0)) for r in records[1:]]
    assert times == sorted(times)
    laps = [r for r in records if isinstance(r, Lap)]
    a = [lap for lap in laps if lap.driver_number == 1]
    assert [lap.crossing_ms for lap in a] == [100_000, 200_000, 320_000, 415_000]
    assert a[0].event_id == "r:lap:1:1" and not a[0].pit_out  # lap-1 'pit out' is the grid
    assert a[1].pit_in and a[2].pit_out and a[2].compound == "HARD"
    assert a[1].track_status is TrackStatus.SC
    b2 = next(lap for lap in laps if lap.driver_number == 2 and lap.lap == 2)
    assert b2.track_status is TrackStatus.SC  # "64": VSC then SC → the most severe


def test_retirement_chequered_flag_and_track_status() -> None:
    records = _race()
    controls = [r for r in records if isinstance(r, Control)]
    retired = [c for c in controls if c.kind is ControlKind.RETIREMENT]
    assert [(c.driver_number, c.lap) for c in retired] == [(3, 3)]  # 2 laps completed → retired on lap 3
    assert retired[0].ts_ms > 212_000  # after its last crossing
    flag = [c for c in controls if c.kind is ControlKind.CHEQUERED_FLAG]
    assert [(c.ts_ms, c.lap) for c in flag] == [(397_500, 4)]  # BBB wins at its 4th crossing
    statuses = [(c.lap, c.track_status) for c in controls if c.kind is ControlKind.TRACK_STATUS]
    assert statuses == [(2, TrackStatus.SC), (3, TrackStatus.GREEN)]
    ids = [r.event_id for r in records if hasattr(r, "event_id")]
    assert len(ids) == len(set(ids)) and ids == [r.event_id for r in _race() if hasattr(r, "event_id")]


FASTF1 = """Time,Driver,DriverNumber,LapTime,LapNumber,Stint,PitOutTime,PitInTime,Compound,TyreLife,Team,\
TrackStatus,Position,RoundNumber,EventName
0 days 01:01:40.000000,AAA,1,100.0,1.0,1.0,0 days 00:40:00.000000,,SOFT,1.0,Ferrari,1,1.0,3,Test Grand Prix
0 days 01:01:41.000000,BBB,2,101.0,1.0,1.0,0 days 00:40:01.000000,,SOFT,1.0,Mercedes,1,2.0,3,Test Grand Prix
0 days 01:03:40.000000,AAA,1,,2.0,1.0,,0 days 01:03:20.000000,SOFT,2.0,Ferrari,45,1.0,3,Test Grand Prix
0 days 01:03:42.000000,BBB,2,,2.0,1.0,,,SOFT,2.0,Mercedes,5,2.0,3,Test Grand Prix
0 days 01:05:20.000000,AAA,1,100.0,3.0,2.0,0 days 01:03:50.000000,,HARD,1.0,Ferrari,1,1.0,3,Test Grand Prix
0 days 01:06:10.000000,BBB,2,,3.0,1.0,,,SOFT,3.0,Mercedes,0,,3,Test Grand Prix
0 days 01:05:00.000000,CCC,3,99.0,1.0,1.0,,,SOFT,1.0,Williams,1,1.0,4,Other Grand Prix
"""


def test_fastf1_table(tmp_path: Path) -> None:
    path = tmp_path / "transformed_grand_prix_laps_2030.csv"
    path.write_text(FASTF1)
    with pytest.raises(ReplayError, match="several rounds"):
        read_table(path)
    rows, name = read_table(tmp_path, year=2030, round_number=3)
    assert name == "Test Grand Prix" and len(rows) == 6
    race = build_race(rows, "f")
    laps = {(lap.driver_number, lap.lap): lap for lap in race.laps}
    # crossings are session times relative to the start (01:00:00), missing lap times derived
    assert laps[1, 1].crossing_ms == 100_000 and laps[2, 1].crossing_ms == 101_000
    assert laps[1, 2].lap_time_ms == 120_000 and laps[1, 2].pit_in
    assert laps[1, 2].track_status is TrackStatus.RED  # an in-lap under red: not a stop downstream
    assert laps[1, 3].pit_out and laps[1, 2].pit_lane_ms == 30_000
    # BBB's unfinished lap 3 (no lap time, no position) is not a lap: BBB retires on lap 3
    assert (2, 3) not in laps
    retired = [c for c in race.controls if c.kind is ControlKind.RETIREMENT]
    assert [(c.driver_number, c.lap, c.ts_ms) for c in retired] == [(2, 3, 370_000)]
    assert race.session.total_laps == 3 and race.session.grid == [1, 2]


def test_rows_without_any_time_are_rejected() -> None:
    with pytest.raises(ReplayError, match="neither a lap time"):
        build_race([LapRow("AAA", 1, "", 1), LapRow("AAA", 1, "", 2, position=1)], "x")


def test_fastf1_rows_filter_round() -> None:
    frame = pl.read_csv(io.StringIO(FASTF1), infer_schema_length=0)
    assert {r.code for r in fastf1_rows(frame, 4)} == {"CCC"}
    with pytest.raises(ReplayError, match="no laps of round 9"):
        fastf1_rows(frame, 9)


def test_build_report_from_redis_contents() -> None:
    codes = {1: "AAA", 2: "BBB"}
    state = {"fastest_lap": {"driver_number": 2, "lap": 4, "lap_time_ms": 96000},
             "hero": {"driver_number": 1, "lap": 4, "lap_time_ms": 95000}}
    events: list[dict[str, Any]] = [
        {"type": "OVERTAKE", "lap": 3, "driver_number": 2, "other_driver_number": 1, "overtake_kind": "PIT"},
        {"type": "PIT_STOP", "lap": 2, "driver_number": 1},
        {"type": "CLASSIFICATION", "classification": [
            {"position": 1, "driver_number": 2, "laps": 4, "status": "Finished"},
            {"position": 2, "driver_number": 1, "laps": 4, "status": "Finished"}]},
    ]
    report = build_report("r", codes, state, {2: [1, 2], 1: [1, 2]}, events)
    assert report["laps"] == {"1": ["AAA", "BBB"], "2": ["AAA", "BBB"]}
    assert report["classification"][0] == {"position": 1, "driver": "BBB", "laps": 4, "status": "Finished"}
    assert report["fastest_lap"] == {"driver": "BBB", "lap": 4, "lap_time_ms": 96000}
    assert report["last_lap_hero"]["driver"] == "AAA"
    assert report["pit_stops"] == [{"driver": "AAA", "lap": 2}]
    assert report["overtakes"] == [{"lap": 3, "driver": "BBB", "passed": "AAA", "kind": "PIT"}]
