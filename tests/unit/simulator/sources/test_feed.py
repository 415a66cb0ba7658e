"""The feed's shared pieces: recording lines, a recording read as sent, playback at an instant,
the recorder."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.sources.feed import (
    INIT,
    Playback,
    RawRecording,
    RecordingWriter,
    feed_time_ns,
    feed_timestamp,
    parse_raw_line,
    read_raw_recording,
    recording_line,
)
from simulator.sources.livetiming import LiveTimingError, parse_recording


def test_a_feed_timestamp_names_its_instant_to_the_microsecond() -> None:
    ns = 1_730_555_234_936_487_065
    assert feed_time_ns(feed_timestamp(ns)) == ns // 1000 * 1000
    assert feed_time_ns("2024-11-02T13:47:14Z") == 1_730_555_234_000_000_000
    assert feed_time_ns(None) is None and feed_time_ns("") is None


def test_recording_lines_round_trip_and_keep_z_payloads_encoded() -> None:
    line = recording_line(5, "CarData.z", "7ZQ9a8Mw")
    assert line == '5:CarData.z:"7ZQ9a8Mw"'
    assert parse_raw_line(line + "\n") == (5, "CarData.z", "7ZQ9a8Mw")
    with pytest.raises(ValueError):
        parse_raw_line("no-stamp")


def test_a_recording_read_as_sent_folds_later_snapshots_into_deltas(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_text("\n".join([
        recording_line(1, INIT, {"LapCount": {"CurrentLap": 1}, "TrackStatus": {"Status": "1"}}),
        recording_line(2, "LapCount", {"CurrentLap": 2}),
        recording_line(3, INIT, {"LapCount": {"CurrentLap": 4}}),  # after a reconnection
        "",
    ]))
    rec = read_raw_recording(path)
    assert rec.start_ns == 1 and rec.end_ns == 3
    assert rec.deltas == [(2, "LapCount", {"CurrentLap": 2}), (3, "LapCount", {"CurrentLap": 4})]


def test_a_recording_made_topic_by_topic_has_no_snapshot_line_and_bad_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_text(recording_line(1, "LapCount", {"CurrentLap": 1, "_kf": True}) + "\n"
                    + recording_line(2, "LapCount", {"CurrentLap": 2}) + "\n")
    rec = read_raw_recording(path)
    assert rec.start_ns == 1 and rec.snapshot == {}
    assert [d[:2] for d in rec.deltas] == [(1, "LapCount"), (2, "LapCount")]
    assert Playback(rec).advance(1) and Playback(rec).snapshot() == {}
    path.write_text("1:init:[]\n")
    with pytest.raises(LiveTimingError, match=r"r.txt:1: the 'init' snapshot is not an object of topics"):
        read_raw_recording(path)
    path.write_text("1:init:{}\nbroken line\n")
    with pytest.raises(LiveTimingError, match=r"r.txt:2: not a recording line"):
        read_raw_recording(path)


def test_playback_gives_the_state_at_an_instant_and_the_deltas_due_since() -> None:
    rec = RawRecording(0, {"TimingData": {"Lines": {"1": {"NumberOfLaps": 0, "Position": "1"}}}})
    rec.deltas += [(10, "TimingData", {"Lines": {"1": {"NumberOfLaps": 1}}}),
                   (20, "TimingData", {"Lines": {"1": {"NumberOfLaps": 2}, "2": {"Position": "2"}}}),
                   (30, "LapCount", {"CurrentLap": 3})]
    play = Playback(rec)
    assert play.advance(5) == [] and play.snapshot()["TimingData"]["Lines"]["1"]["NumberOfLaps"] == 0
    assert [ns for ns, _, _ in play.advance(20)] == [10, 20]
    snap = play.snapshot(["TimingData", "Unknown"])
    assert list(snap) == ["TimingData"]
    assert snap["TimingData"]["Lines"] == {"1": {"NumberOfLaps": 2, "Position": "1"}, "2": {"Position": "2"}}
    snap["TimingData"]["Lines"]["1"]["NumberOfLaps"] = 99  # a copy: sending it changes nothing
    assert play.state["TimingData"]["Lines"]["1"]["NumberOfLaps"] == 2
    assert rec.snapshot["TimingData"]["Lines"]["1"]["NumberOfLaps"] == 0  # the recording is never changed
    assert not play.finished and [d[1] for d in play.advance(10**12)] == ["LapCount"] and play.finished


def test_the_recorder_writes_what_the_reader_reads(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "live.txt"
    writer = RecordingWriter(path)
    writer.write(1_000_000, INIT, {"LapCount": {"CurrentLap": 1, "TotalLaps": 3}})
    writer.write(2_000_000, "LapCount", {"CurrentLap": 2})
    # flushed as it goes: a crash now keeps both lines
    assert path.read_text(encoding="utf-8").count("\n") == 2
    writer.close()
    writer.close()  # twice is harmless
    messages = parse_recording(path.read_text(encoding="utf-8").splitlines())
    assert [(m.ts_ms, m.topic, m.full) for m in messages] == [(1, "LapCount", True), (2, "LapCount", False)]
    assert writer.lines == 2
