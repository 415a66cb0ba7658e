"""A small live-timing feed, line by line: a 3-lap race of 3 cars (pit stop, retirement, VSC, a
deleted lap time, a penalty), for the converter's tests."""

from __future__ import annotations

import json
from typing import Any

T0 = 1_700_000_000_000  # unix ms of the start


def feed_line(ms: int, topic: str, data: Any) -> str:
    return f"{(T0 + ms) * 1_000_000 + 123}:{topic}:{json.dumps(data)}"


def td(number: str, **fields: Any) -> dict[str, Any]:
    return {"Lines": {number: fields}}


INIT = {
    "SessionInfo": {"Meeting": {"Name": "Test Grand Prix", "Circuit": {"ShortName": "Testring"}},
                    "Name": "Sprint", "StartDate": "2023-11-13T14:00:00", "GmtOffset": "-03:00:00"},
    "DriverList": {
        "1": {"RacingNumber": "1", "Tla": "AAA", "FirstName": "Al", "LastName": "Alpha",
              "FullName": "Al ALPHA", "TeamName": "Red", "TeamColour": "FF0000"},
        "2": {"RacingNumber": "2", "Tla": "BBB", "FullName": "Bo BETA", "TeamName": "Blue",
              "TeamColour": "0000FF"},
        "3": {"RacingNumber": "3", "Tla": "CCC", "TeamName": "Green"},  # missing fields
    },
    "SessionStatus": {"Status": "Inactive"},
    "TrackStatus": {"Status": "1", "Message": "AllClear"},
    "LapCount": {"CurrentLap": 1, "TotalLaps": 3},
    "TimingAppData": {"Lines": {
        "1": {"GridPos": "2", "Stints": [{"Compound": "MEDIUM", "TotalLaps": 0, "New": "true"}]},
        "2": {"GridPos": "1", "Stints": [{"Compound": "SOFT", "TotalLaps": 2, "New": "false"}]},
        "3": {"GridPos": "3", "Stints": [{"Compound": "HARD", "TotalLaps": 0, "New": "true"}]},
    }},
    "RaceControlMessages": {"Messages": [{"Utc": "x", "Message": "PRE-RACE NOTE"}]},
    "TimingData": {"Lines": {
        n: {"Position": p, "NumberOfLaps": 0, "InPit": False, "Retired": False, "Stopped": False,
            "Sectors": [{"Value": ""}, {"Value": ""}, {"Value": ""}], "LastLapTime": {"Value": ""}}
        for n, p in (("1", "2"), ("2", "1"), ("3", "3"))}},
}


def race_lines() -> list[str]:
    """A 3-lap race: car 2 wins, car 1 pits on lap 2 (SOFT → HARD), car 3 retires on lap 2."""
    return [
        feed_line(-60_000, "init", INIT),
        feed_line(0, "SessionStatus", {"Status": "Started"}),
        feed_line(80_000, "TimingData", td("2", NumberOfLaps=1, Sectors={"2": {"Value": "30.000"}})),
        feed_line(81_000, "TimingData", td("1", NumberOfLaps=1, Sectors={"2": {"Value": "30.500"}})),
        feed_line(82_000, "TimingData", td("3", NumberOfLaps=1, Sectors={"2": {"Value": "31.000"}})),
        feed_line(90_000, "TimingData", td("2", Sectors={"0": {"Value": "25.100"}})),
        feed_line(100_000, "TrackStatus", {"Status": "6", "Message": "VSCDeployed"}),
        feed_line(110_000, "TrackStatus", {"Status": "1", "Message": "AllClear"}),
        feed_line(120_000, "TimingData", td("3", Stopped=True)),
        feed_line(140_000, "TimingData", td("1", InPit=True)),
        feed_line(160_000, "TimingData", td("2", NumberOfLaps=2, LastLapTime={"Value": "1:20.000"},
                                           Sectors={"1": {"Value": "25.000"}, "2": {"Value": "29.900"}})),
        feed_line(166_000, "TimingData", td("1", NumberOfLaps=2)),
        feed_line(167_000, "TimingData", td("1", LastLapTime={"Value": "1:25.000"})),  # late lap time
        feed_line(170_000, "TimingAppData", {"Lines": {"1": {"Stints": {"1": {"Compound": "HARD", "TotalLaps": 0}}}}}),
        feed_line(186_000, "TimingData", td("1", InPit=False, PitOut=True)),
        feed_line(200_000, "RaceControlMessages", {"Messages": {"1": {
            "Lap": 3, "Category": "Other",
            "Message": "CAR 2 (BBB) TIME 1:20.000 DELETED - TRACK LIMITS AT TURN 4 LAP 2 14:02:40"}}}),
        feed_line(205_000, "RaceControlMessages", {"Messages": {"2": {
            "Lap": 3, "Category": "Other", "Message": "FIA STEWARDS: 5 SECOND TIME PENALTY FOR CAR 1 (AAA)"}}}),
        feed_line(238_000, "TimingData", td("2", NumberOfLaps=3, LastLapTime={"Value": "1:18.000"})),
        feed_line(238_500, "RaceControlMessages", {"Messages": {"3": {
            "Lap": 3, "Category": "Flag", "Flag": "CHEQUERED", "Message": "CHEQUERED FLAG"}}}),
        feed_line(255_000, "TimingData", td("1", NumberOfLaps=3, LastLapTime={"Value": "1:29.000"})),
        feed_line(256_000, "SessionStatus", {"Status": "Finished"}),
        feed_line(300_000, "TimingData", td("2", Stopped=True)),  # parked after the flag: not a retirement
    ]
