"""Feed messages one at a time → records as soon as they are final (what ``racewire live`` sends
while the session runs), against the converter that reads the whole capture."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from schemas.model import Control, ControlKind, InputRecord, Lap, Session
from simulator.sources.incremental import IncrementalConverter, convert, convert_incrementally
from simulator.sources.livetiming import in_arrival_order, parse_recording
from tests.support.livetiming_feed import INIT, T0, feed_line, race_lines


def _live(lines: list[str]) -> list[tuple[int, InputRecord]]:
    """(session ms of the message that let it go, record), message by message."""
    inc = IncrementalConverter("r")
    out: list[tuple[int, InputRecord]] = []
    for m in in_arrival_order(parse_recording(lines)):
        out += [(m.ts_ms - T0, r) for r in inc.push(m)]
    out += [(-1, r) for r in inc.finish()]
    return out


def _at(out: list[tuple[int, InputRecord]], event_id: str) -> int:
    return next(t for t, r in out if r.event_id == event_id)


def test_each_record_goes_as_soon_as_it_is_final() -> None:
    out = _live(race_lines())
    assert isinstance(out[0][1], Session) and out[0][0] == 0  # at the start, the distance known
    assert _at(out, "r:start") == 0
    assert _at(out, "r:lap:2:1") == 100_000  # no time from the feed: its crossing difference, 10 s on
    assert _at(out, "r:lap:2:2") == 160_000  # the feed's time came with the crossing
    # car 1's in-lap: its late lap time at 167 s, its time in the pit lane once it is out at 186 s
    lap = next(r for t, r in out if r.event_id == "r:lap:1:2")
    assert _at(out, "r:lap:1:2") == 186_000
    assert isinstance(lap, Lap) and (lap.lap_time_ms, lap.pit_in, lap.pit_lane_ms) == (85_000, True, 46_000)
    # car 2's lap 2 was deleted at 200 s, after it went: a verdict names it
    verdict = next(r for t, r in out if isinstance(r, Control) and r.kind is ControlKind.LAP_DELETED)
    assert (verdict.driver_number, verdict.lap, _at(out, verdict.event_id)) == (2, 2, 200_000)
    assert _at(out, "r:chequered") == 238_000  # the leader completing the distance
    assert {r.event_id for t, r in out if t == -1} >= {"r:retired:3"}  # stopped, never came back


def test_the_same_records_as_the_whole_capture_with_late_deletions_as_verdicts() -> None:
    whole = convert(parse_recording(race_lines()), "r")
    live = [r for _, r in _live(race_lines())]
    laps = [r for r in live if isinstance(r, Lap)]
    verdicts = {(r.driver_number, r.lap) for r in live if isinstance(r, Control) and r.kind is ControlKind.LAP_DELETED}
    assert verdicts == {(lap.driver_number, lap.lap) for lap in whole.laps if lap.deleted}
    # a lap as it went out, with the verdict applied, is the whole capture's lap
    applied = {lap.event_id: replace(lap, deleted=(lap.driver_number, lap.lap) in verdicts) for lap in laps}
    assert applied == {lap.event_id: lap for lap in whole.laps}
    others = {r.event_id: r for r in live if isinstance(r, Control) and r.kind is not ControlKind.LAP_DELETED}
    assert others == {c.event_id: c for c in whole.controls}
    assert [r for r in live if isinstance(r, Session)] == [whole.session]


def test_converting_twice_gives_the_same_records() -> None:
    assert convert_incrementally(parse_recording(race_lines()), "r") == \
        convert_incrementally(parse_recording(race_lines()), "r")


def test_without_the_distance_everything_waits_for_the_end() -> None:
    init: dict[str, Any] = json.loads(json.dumps(INIT))
    del init["LapCount"]
    lines = [feed_line(-60_000, "init", init), *race_lines()[1:]]
    out = _live(lines)
    assert all(t == -1 for t, _ in out)  # the first record went at the end
    assert isinstance(out[0][1], Session) and out[0][1].total_laps == 3
    whole = convert(parse_recording(lines), "r")
    assert sorted(r.event_id for _, r in out if isinstance(r, Lap)) == sorted(lap.event_id for lap in whole.laps)
