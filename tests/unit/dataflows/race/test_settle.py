"""The watermark (the events that wait for it are tested through the race step in test_state.py)."""

from __future__ import annotations

from dataflows.race.settle import watermark
from tests.support.race_builder import Race


def test_the_watermark_is_the_instant_every_car_has_been_seen_past() -> None:
    r = Race(cars=2)
    r.lap(1, 1, 90_000)
    assert watermark(r.state) == 0  # car 2 not seen at all
    r.tel(2, 50_000, 1, 0.6)
    assert watermark(r.state) == 50_001  # car 2 seen in telemetry on its lap 1, with all its laps in
    r.lap(2, 1, 90_500)
    assert watermark(r.state) == 90_001
    r.state.give_up_on([1])
    assert watermark(r.state) == 90_501 and watermark(r.state, skip_silent=False) == 90_001
