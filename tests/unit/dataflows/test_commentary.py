from __future__ import annotations

from dataflows.commentary import commentary_for
from schemas.model import ClassifiedCar, EventType, OvertakeKind, RaceEvent, TrackStatus


def _overtake(lap: int, a: int, b: int) -> RaceEvent:
    return RaceEvent(f"r:overtake:{lap}:{a}:{b}", "r", EventType.OVERTAKE, lap * 90_000, lap, a, f"C{a:02d}", b,
                     f"C{b:02d}", overtake_kind=OvertakeKind.ON_TRACK)


def test_lines_are_deterministic_and_varied() -> None:
    events = [_overtake(lap, a, b) for lap in range(1, 8) for a, b in ((1, 2), (3, 4))]
    first = [commentary_for(e) for e in events]
    again = [commentary_for(e) for e in events]
    assert first == again
    texts = {c.text.replace(e.code or "", "X").replace(e.other_code or "", "Y").replace(str(e.lap), "N")
             for c, e in zip(first, events, strict=True) if c is not None}
    assert len(texts) >= 3  # not one sentence repeated


def test_each_line_names_its_cars_and_points_to_its_event() -> None:
    e = _overtake(5, 16, 1)
    line = commentary_for(e)
    assert line is not None and "C16" in line.text and "C01" in line.text
    assert line.source_event_id == e.event_id and line.event_id == f"{e.event_id}:commentary"


def test_flags_classification_and_silence() -> None:
    sc = RaceEvent("r:flag:1:SC", "r", EventType.FLAG, 1, 3, track_status=TrackStatus.SC)
    assert "afety car" in (commentary_for(sc) or _none()).text
    cls = RaceEvent("r:classification", "r", EventType.CLASSIFICATION, 1, 50,
                    classification=[ClassifiedCar(1, 16, "LEC", 50, "Finished")])
    assert "LEC wins" in (commentary_for(cls) or _none()).text
    pb = RaceEvent("r:pb:1:2", "r", EventType.PERSONAL_BEST, 1, 2, 1, "AAA")
    assert commentary_for(pb) is None
    provisional = RaceEvent("r:hero:1:provisional", "r", EventType.LAST_LAP_HERO, 1, 50, 1, "AAA",
                            lap_time_ms=90_000, provisional=True)
    assert commentary_for(provisional) is None


def _none() -> object:
    raise AssertionError("expected a commentary line")
