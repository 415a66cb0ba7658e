"""Race events: built with their text, each given out once."""

from __future__ import annotations

from dataflows.race.events import EventLog
from schemas.model import TrackStatus
from tests.support.race_builder import Race


def test_events_go_out_once_with_their_text() -> None:
    r = Race(cars=2)
    log = EventLog("r", r.state.cars)
    first = log.flag(5_000, TrackStatus.SC, 3, "")
    assert first is not None and first.message == "Safety car deployed" and first.event_id == "r:flag:5000:SC"
    assert log.flag(5_000, TrackStatus.SC, 3, "") is None and len(log) == 1
    pb = log.personal_best(2, 4, 360_000, 89_123)
    assert pb is not None and pb.code == "BBB" and pb.message == "BBB personal best 1:29.123"
