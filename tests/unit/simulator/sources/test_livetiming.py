"""Live-timing capture → racewire input records (pure), on small synthetic feed snippets."""

from __future__ import annotations

import base64
import json
import random
import zlib
from pathlib import Path
from typing import Any

import pytest

from schemas.model import Control, ControlKind, Lap, Session, SessionKind, TrackStatus, Weather
from simulator.report import build_report
from simulator.sources.incremental import convert, load_capture
from simulator.sources.livetiming import (
    FeedMessage,
    LiveTimingError,
    decode_z,
    in_arrival_order,
    merge,
    parse_archive_lines,
    parse_recording,
    time_ms,
)
from tests.support.livetiming_feed import INIT, T0, feed_line, race_lines, td


def _convert(lines: list[str], race_id: str = "r") -> list[Any]:
    return list(convert(parse_recording(lines), race_id).records())


# ------------------------------------------------------------------------------ merging


def test_merge_dicts_recursively_and_lists_by_index() -> None:
    state = merge(None, {"Lines": {"1": {"Sectors": [{"Value": "1"}, {"Value": "2"}], "X": 1}}})
    state = merge(state, {"Lines": {"1": {"Sectors": {"1": {"Value": "9"}, "3": {"Value": "4"}}}}})
    assert state["Lines"]["1"]["Sectors"] == [{"Value": "1"}, {"Value": "9"}, None, {"Value": "4"}]
    state = merge(state, {"Lines": {"1": {"X": 2}, "2": {"Y": True}}, "_kf": True})
    assert state == {"Lines": {"1": {"Sectors": [{"Value": "1"}, {"Value": "9"}, None, {"Value": "4"}],
                                     "X": 2}, "2": {"Y": True}}}


def test_merge_deleted_keys_and_indices() -> None:
    state = merge(None, {"Best": {"Value": "1:00.000", "Lap": 4}, "L": [1, 2, 3]})
    state = merge(state, {"Best": {"Value": "", "_deleted": ["Lap"]}, "L": {"_deleted": ["0"]}})
    assert state == {"Best": {"Value": ""}, "L": [2, 3]}


def test_merge_list_value_replaces_and_is_a_copy() -> None:
    delta = {"Stints": [{"Compound": "SOFT"}]}
    state = merge({"Stints": [{"Compound": "HARD"}, {"Compound": "HARD"}]}, delta)
    assert state == {"Stints": [{"Compound": "SOFT"}]}
    state["Stints"][0]["Compound"] = "X"
    assert delta["Stints"][0]["Compound"] == "SOFT"


def test_decode_z_topics() -> None:
    payload = {"Entries": [{"Cars": {"1": {"Channels": {"2": 300}}}}]}
    deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    blob = base64.b64encode(deflate.compress(json.dumps(payload).encode()) + deflate.flush()).decode()
    assert decode_z(blob) == payload
    [m] = parse_recording([f"1000000:CarData.z:{json.dumps(blob)}"])
    assert (m.topic, m.data, m.ts_ms) == ("CarData", payload, 1)


def test_time_parsing() -> None:
    assert time_ms("1:12.366") == 72_366
    assert time_ms("59.9") == 59_900
    assert time_ms("") is None and time_ms(None) is None and time_ms("LAP 1") is None


# ------------------------------------------------------------------------------ reading


def test_parse_recording_splits_init_and_skips_bad_lines() -> None:
    msgs = parse_recording(["\ufeff" + feed_line(0, "init", {"A": {"x": 1}, "B": {}}), "garbage",
                            feed_line(5, "A", {"x": 2}), "", "12:A:{not json"])
    assert [(m.topic, m.full, m.ts_ms - T0) for m in msgs] == [("A", True, 0), ("B", True, 0), ("A", False, 5)]


def test_parse_archive_lines_with_bom() -> None:
    msgs = parse_archive_lines("LapCount", ["\ufeff00:00:02.024{\"CurrentLap\":1,\"TotalLaps\":51}",
                                            "01:10:10.5{\"CurrentLap\":2}", "junk"])
    assert [(m.ts_ms, m.data) for m in msgs] == [(2_024, {"CurrentLap": 1, "TotalLaps": 51}),
                                                 (4_210_500, {"CurrentLap": 2})]


def test_arrival_order_and_duplicates() -> None:
    a = FeedMessage(10, "T", {"x": 1}, 0)
    b = FeedMessage(5, "T", {"x": 2}, 1)
    dup = FeedMessage(11, "T", {"x": 1}, 2)
    later = FeedMessage(10_000, "T", {"x": 1}, 3)
    assert in_arrival_order([a, b, dup, later]) == [b, a, later]


# ------------------------------------------------------------------------------ converting


def test_session_from_driver_list_grid_and_lap_count() -> None:
    session = _convert(race_lines())[0]
    assert isinstance(session, Session)
    assert session.name == "Test Grand Prix Sprint" and session.circuit == "Testring"
    assert session.total_laps == 3 and session.grid == [2, 1, 3]
    assert [(d.code, d.name, d.team, d.team_colour) for d in session.drivers] == [
        ("BBB", "Bo BETA", "Blue", "0000FF"), ("AAA", "Al Alpha", "Red", "FF0000"),
        ("CCC", "CCC", "Green", "888888")]
    assert session.start_time.timestamp() == T0 / 1000 and session.source == "livetiming"


def test_laps_crossings_times_sectors_pits_tyres() -> None:
    records = _convert(race_lines())
    laps = {(r.driver_number, r.lap): r for r in records if isinstance(r, Lap)}
    assert sorted(laps) == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (3, 1)]
    a1, a2, a3 = laps[1, 1], laps[1, 2], laps[1, 3]
    assert (a1.crossing_ms, a1.lap_time_ms, a1.sector3_ms) == (81_000, 81_000, 30_500)  # lap 1: from the start
    assert (a2.crossing_ms, a2.lap_time_ms) == (166_000, 85_000)  # LastLapTime came a second later
    assert a2.pit_in and not a2.pit_out and a2.pit_lane_ms == 46_000
    assert a3.pit_out and not a3.pit_in and (a3.compound, a3.tyre_age) == ("HARD", 0)
    assert (a1.compound, a1.event_id) == ("MEDIUM", "r:lap:1:1")
    b2 = laps[2, 2]
    assert (b2.lap_time_ms, b2.sector1_ms, b2.sector2_ms, b2.sector3_ms) == (80_000, 25_100, 25_000, 29_900)
    assert b2.deleted and not laps[2, 3].deleted  # deleted by race control after the lap
    assert b2.track_status is TrackStatus.VSC and laps[2, 1].track_status is TrackStatus.GREEN
    assert (laps[2, 1].compound, laps[2, 1].tyre_age) == ("SOFT", 2)


def test_controls_retirement_flag_messages() -> None:
    records = _convert(race_lines())
    controls = [r for r in records if isinstance(r, Control)]
    kinds = [(c.kind, c.ts_ms, c.driver_number, c.lap) for c in controls]
    assert kinds[0] == (ControlKind.RACE_START, 0, None, 1)
    assert (ControlKind.TRACK_STATUS, 100_000, None, 2) in kinds
    assert [c.track_status for c in controls if c.kind is ControlKind.TRACK_STATUS] == [TrackStatus.VSC,
                                                                                       TrackStatus.GREEN]
    assert (ControlKind.RETIREMENT, 120_000, 3, 2) in kinds  # stopped on lap 2, 1 lap completed
    assert (ControlKind.CHEQUERED_FLAG, 238_000, None, 3) in kinds  # the leader's final crossing
    assert not any(k == ControlKind.RETIREMENT and n == 2 for k, _t, n, _l in kinds)
    penalty = next(c for c in controls if c.kind is ControlKind.PENALTY)
    assert penalty.driver_number == 1 and "5 SECOND" in penalty.message
    assert not any("PRE-RACE" in c.message for c in controls)  # before the start
    ids = [r.event_id for r in records]
    assert len(ids) == len(set(ids))
    times = [getattr(r, "crossing_ms", getattr(r, "ts_ms", 0)) for r in records[1:]]
    assert times == sorted(times)
    assert _convert(race_lines()) == records  # stable


def test_duplicated_and_out_of_order_deltas_change_nothing() -> None:
    lines = race_lines()
    noisy = lines + lines[4:9] + [lines[2]]  # resent messages (some long after)
    random.Random(7).shuffle(noisy)
    noisy.remove(lines[0])
    noisy.insert(0, lines[0])
    assert _convert(noisy) == _convert(lines)
    # a stale delta arriving later (laps 1 after 2) takes nothing back
    stale = [*lines[:12], feed_line(166_500, "TimingData", td("1", NumberOfLaps=1)), *lines[12:]]
    assert [r for r in _convert(stale) if isinstance(r, Lap)] == [r for r in _convert(lines) if isinstance(r, Lap)]


def test_missed_increment_and_missing_lap_count() -> None:
    lines = [line for line in race_lines() if ":LapCount:" not in line]
    init = json.loads(lines[0].split(":", 2)[2])
    del init["LapCount"]
    lines[0] = feed_line(-60_000, "init", init)
    lines = [line for line in lines if '"1": {"NumberOfLaps": 2}' not in line]  # car 1 lap 2 lost
    records = _convert(lines)
    assert records[0].total_laps == 3  # the most laps completed
    a = [r for r in records if isinstance(r, Lap) and r.driver_number == 1]
    assert [x.lap for x in a] == [1, 2, 3]
    assert a[1].lap_time_ms is None and a[1].crossing_ms < a[2].crossing_ms


def test_late_capture_catches_up_earlier_laps() -> None:
    init = json.loads(json.dumps(INIT))
    init["SessionStatus"] = {"Status": "Started"}
    init["SessionData"] = {"StatusSeries": [{"Utc": "2023-11-14T22:13:20Z", "SessionStatus": "Started"}]}
    for n, done in (("1", 2), ("2", 2), ("3", 1)):
        init["TimingData"]["Lines"][n]["NumberOfLaps"] = done
    start = 1_700_000_000_000  # 2023-11-14T22:13:20Z
    lines = [f"{(start + 200_000) * 1_000_000}:init:{json.dumps(init)}",
             f"{(start + 238_000) * 1_000_000}:TimingData:{json.dumps(td('2', NumberOfLaps=3))}",
             f"{(start + 255_000) * 1_000_000}:TimingData:{json.dumps(td('1', NumberOfLaps=3))}"]
    records = _convert(lines)
    laps = [r for r in records if isinstance(r, Lap)]
    by_car = {n: [x.lap for x in laps if x.driver_number == n] for n in (1, 2, 3)}
    assert by_car == {1: [1, 2, 3], 2: [1, 2, 3], 3: [1]}
    caught = [x for x in laps if x.lap < 3]
    assert all(x.lap_time_ms is None and 0 < x.crossing_ms < 200_000 for x in caught)
    b = [x for x in laps if x.driver_number == 2]
    assert b[2].crossing_ms == 238_000 and b[2].lap_time_ms == 238_000 - b[1].crossing_ms


def test_batched_crossings_follow_positions() -> None:
    lines = [*race_lines()[:2],
             feed_line(80_000, "TimingData", {"Lines": {"1": {"NumberOfLaps": 1, "Position": "2"},
                                                    "2": {"NumberOfLaps": 1, "Position": "1"}}})]
    laps = [r for r in _convert(lines) if isinstance(r, Lap)]
    assert [(x.driver_number, x.crossing_ms) for x in laps] == [(2, 80_000), (1, 80_001)]


def test_no_start_in_capture_starts_with_timing() -> None:
    lines = [line for line in race_lines() if ":SessionStatus:" not in line]
    records = _convert(lines)
    first = min(r.crossing_ms for r in records if isinstance(r, Lap))
    assert first == 0  # the race clock starts at the first timing delta (car 2's lap 1 at 80 s)


def test_empty_capture_is_an_error() -> None:
    with pytest.raises(LiveTimingError):
        convert(parse_recording([feed_line(0, "init", {"SessionStatus": {"Status": "Inactive"}})]), "r")


def test_archive_folder(tmp_path: Path) -> None:
    def stream(name: str, rows: list[tuple[int, Any]]) -> None:
        text = "".join(f"00:{ms // 60_000:02d}:{ms % 60_000 / 1000:06.3f}{json.dumps(d)}\r\n" for ms, d in rows)
        (tmp_path / f"{name}.jsonStream").write_text("\ufeff" + text, encoding="utf-8")

    stream("DriverList", [(0, INIT["DriverList"])])
    stream("SessionStatus", [(1_000, {"Status": "Inactive"}), (10_000, {"Status": "Started"})])
    stream("LapCount", [(2_000, {"CurrentLap": 1, "TotalLaps": 1})])
    stream("TimingData", [(3_000, INIT["TimingData"]), (95_000, td("2", NumberOfLaps=1)),
                          (96_000, td("1", NumberOfLaps=1)), (97_000, td("3", NumberOfLaps=1))])
    race = load_capture(tmp_path, "arch")
    assert race.session.total_laps == 1
    assert [(x.driver_number, x.crossing_ms) for x in race.laps] == [(2, 85_000), (1, 86_000), (3, 87_000)]
    report = build_report("arch", race.codes(), {}, {1: [2, 1, 3]}, [])
    assert report["laps"] == {"1": ["BBB", "AAA", "CCC"]}


# ------------------------------------------------------------------------------ reconnections


def _with_gap(lines: list[str], start_ms: int, end_ms: int) -> list[str]:
    """The race as a live client sees it when its connection drops at ``start_ms`` and a new
    subscription's snapshot (the state at ``end_ms``) arrives at ``end_ms``."""
    kept: list[str] = []
    state: dict[str, Any] = {}
    for line in lines:
        ns, topic, text = line.split(":", 2)
        ms = int(ns) // 1_000_000 - T0
        data = json.loads(text)
        if topic == "init":
            state = json.loads(text)
        elif ms <= end_ms:
            state[topic] = merge(state.get(topic), json.loads(text))
        if start_ms < ms <= end_ms:
            continue
        if ms > end_ms and not any(":init:" in k for k in kept[1:]):
            kept.append(feed_line(end_ms, "init", state))
        kept.append(line if topic != "init" or ms <= start_ms else feed_line(ms, topic, data))
    return kept


def test_a_snapshot_after_a_reconnection_gives_back_the_laps_and_messages_of_the_gap() -> None:
    """Laps 2 of cars 2 and 1, car 1's pit exit, a deleted lap time and a penalty all happen while
    the connection is down (150-210 s); the snapshot taken on reconnecting brings every one back."""
    whole = convert(parse_recording(race_lines()), "r")
    gap = convert(parse_recording(_with_gap(race_lines(), 150_000, 210_000)), "r")
    assert [lap.event_id for lap in gap.laps] == [lap.event_id for lap in whole.laps]  # none lost, none twice
    laps = {(lap.driver_number, lap.lap): lap for lap in gap.laps}
    assert laps[(2, 2)].lap_time_ms == 80_000 and laps[(2, 2)].deleted  # time from the snapshot, deletion too
    assert laps[(1, 2)].lap_time_ms == 85_000 and laps[(1, 2)].pit_in and not laps[(1, 2)].pit_out
    assert laps[(1, 3)].pit_out
    assert laps[(2, 2)].crossing_ms < laps[(1, 2)].crossing_ms  # the snapshot's order at the line
    for a, b in zip(whole.laps, gap.laps, strict=True):
        assert (a.lap_time_ms, a.deleted, a.pit_in, a.pit_out, a.compound) == \
               (b.lap_time_ms, b.deleted, b.pit_in, b.pit_out, b.compound), a.event_id
    kinds = [c.kind for c in gap.controls]
    assert kinds.count(ControlKind.PENALTY) == 1
    assert {c.event_id for c in gap.controls} == {c.event_id for c in whole.controls}


def test_weather_team_radio_clock_and_session_kind() -> None:
    """WeatherData (numbers as strings) → a Weather record at the start and at each change, none
    for a repeated measurement; TeamRadio → one TEAM_RADIO control per clip, at its Utc; the
    clock → CLOCK controls; the session's kind from SessionInfo."""
    init = json.loads(json.dumps(INIT))
    init["WeatherData"] = {"AirTemp": "27.9", "Humidity": "50.0", "Pressure": "928.4", "Rainfall": "0",
                           "TrackTemp": "45.2", "WindDirection": "359.6", "WindSpeed": "2.4"}
    init["ExtrapolatedClock"] = {"Utc": "2023-11-13T17:00:00Z", "Remaining": "00:30:00", "Extrapolating": False}
    start_utc = "2023-11-14T22:13:20"  # T0 in UTC
    lines = [feed_line(-60_000, "init", init), *race_lines()[1:]]
    lines[2:2] = [
        feed_line(1_000, "ExtrapolatedClock", {"Utc": f"{start_utc}.500Z", "Remaining": "00:29:59",
                                               "Extrapolating": True}),
        feed_line(30_000, "WeatherData", {"AirTemp": "27.9", "Humidity": "50.0", "Pressure": "928.4",
                                          "Rainfall": "0", "TrackTemp": "45.2", "WindDirection": "359.6",
                                          "WindSpeed": "2.4"}),  # the same: nothing new
        feed_line(60_000, "WeatherData", {"TrackTemp": "44.0", "Rainfall": "1"}),
        feed_line(65_000, "TeamRadio", {"Captures": [{"Utc": "2023-11-14T22:14:18.000Z", "RacingNumber": "1",
                                                      "Path": "TeamRadio/AAA_1.mp3"}]}),
        feed_line(66_000, "TeamRadio", {"Captures": {"0": {"Utc": "2023-11-14T22:14:18.000Z", "RacingNumber": "1",
                                                           "Path": "TeamRadio/AAA_1.mp3"}}}),  # the same clip
    ]
    records = _convert(lines)
    weather = [r for r in records if isinstance(r, Weather)]
    assert [(w.ts_ms, w.track_temp_c, w.rainfall) for w in weather] == [(0, 45.2, False), (60_000, 44.0, True)]
    assert weather[0].air_temp_c == 27.9 and weather[0].humidity_pct == 50.0 and weather[0].wind_direction_deg == 0
    controls = [r for r in records if isinstance(r, Control)]
    radio = [(c.ts_ms, c.driver_number, c.clip_path) for c in controls if c.kind is ControlKind.TEAM_RADIO]
    assert radio == [(58_000, 1, "TeamRadio/AAA_1.mp3")]
    clock = [(c.ts_ms, c.remaining_ms, c.clock_running) for c in controls if c.kind is ControlKind.CLOCK]
    assert clock == [(0, 1_800_000, False), (500, 1_799_000, True)]
    session = next(r for r in records if isinstance(r, Session))
    assert session.session_type is SessionKind.SPRINT
