"""The real sprint captures followed as if live: every record goes while the session runs (laps
within seconds of their crossing), and the whole session comes out the same as when the capture is
read to its end. The recordings have no ``LapCount``; the service sends it from the start, so the
distance is put in their first snapshot, as a live run gets it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.model import Control, ControlKind, Lap, Session
from simulator.sources.incremental import IncrementalConverter, recorded_race
from simulator.sources.livetiming import in_arrival_order, parse_recording

RECORDINGS = Path("livetiming") / "recordings"


def _with_distance(path: Path, total: int) -> list[str]:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    ns, _topic, text = lines[0].split(":", 2)
    init = json.loads(text)
    init["LapCount"] = {"CurrentLap": 1, "TotalLaps": total}
    return [f"{ns}:init:{json.dumps(init)}", *lines[1:]]


@pytest.mark.parametrize(("name", "total"), [("2024_brazil_sprint", 24), ("2025_austin_sprint", 19)])
def test_a_sprint_followed_live_goes_out_as_it_happens_and_ends_the_same(shared_data: Path, name: str,
                                                                         total: int) -> None:
    path = shared_data / RECORDINGS / f"{name}.txt"
    lines = _with_distance(path, total)
    inc = IncrementalConverter("x")
    lag: list[int] = []  # session ms from a lap's crossing to the message that let it go
    deleted_later = 0
    for m in in_arrival_order(parse_recording(lines)):
        for r in inc.push(m):
            if isinstance(r, Lap):
                lag.append(inc.conv._session_ms(m.ts_ms) - r.crossing_ms)
            deleted_later += isinstance(r, Control) and r.kind is ControlKind.LAP_DELETED
    at_end = [r for r in inc.finish() if isinstance(r, Lap)]
    assert len(lag) > 300 and len(at_end) <= 2  # at most a car's last in-lap waits for the end
    lag.sort()
    assert lag[len(lag) // 2] <= 1_000 and lag[int(len(lag) * 0.99)] <= 60_000, (lag[len(lag) // 2], lag[-5:])
    assert deleted_later > 0  # track-limits deletions came after their laps: verdicts went out

    live = recorded_race(parse_recording(lines), "x")
    whole = recorded_race(parse_recording(path.read_text(encoding="utf-8-sig").splitlines()), "x")
    assert live.laps == whole.laps  # the same laps, deletions included
    assert {c.event_id: c for c in live.controls} == {c.event_id: c for c in whole.controls}
    assert isinstance(live.session, Session) and live.session == whole.session
