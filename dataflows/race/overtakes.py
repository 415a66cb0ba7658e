"""Overtakes at the timing line, decided from crossing times alone.

Car A overtook car B on lap n when B was ahead at the end of lap n-1 (the grid for lap 1) and A
completed lap n before B. If B never completed lap n because it retired after A crossed, the
kind is RETIREMENT. Otherwise the kind is PIT when either car's lap n-1 or lap n was an in- or
out-lap, else ON_TRACK. ``under_safety_car`` when either car's lap n was neutralised.

A pair is decided as soon as the later of its facts is known, and each pair once: whichever
order the records arrive in, the same set of overtakes comes out.
"""

from __future__ import annotations

from dataclasses import dataclass

from dataflows.race.timing import CarTiming, TimingLine
from schemas.model import OvertakeKind


@dataclass(slots=True, frozen=True)
class Overtake:
    lap: int
    driver: int
    passed: int
    kind: OvertakeKind
    under_safety_car: bool
    ts_ms: int


def _ahead_at(a: CarTiming, b: CarTiming, lap: int) -> bool | None:
    """Whether ``b`` was ahead of ``a`` at the end of ``lap`` (None when unknown)."""
    ta, tb = a.crossing(lap), b.crossing(lap)
    if ta is None or tb is None:
        return None
    return tb < ta


def _kind(a: CarTiming, b: CarTiming, lap: int) -> OvertakeKind:
    if any(c.is_pit_lap(k) for c in (a, b) for k in (lap - 1, lap)):
        return OvertakeKind.PIT
    return OvertakeKind.ON_TRACK


def _neutralised(a: CarTiming, b: CarTiming, lap: int) -> bool:
    return any(len(c.neutralised) >= lap and c.neutralised[lap - 1] for c in (a, b))


def pair(timing: TimingLine, a_num: int, b_num: int, lap: int) -> Overtake | None:
    """Did ``a_num`` overtake ``b_num`` on ``lap``? None when not (or not yet known)."""
    if lap == 1 and not timing.grid_known:
        return None
    a, b = timing.cars[a_num], timing.cars[b_num]
    if _ahead_at(a, b, lap - 1) is not True:
        return None
    ta = a.crossing(lap)
    if ta is None:
        return None
    tb = b.crossing(lap)
    if tb is not None:
        if ta < tb:
            return Overtake(lap, a_num, b_num, _kind(a, b, lap), _neutralised(a, b, lap), ta)
        return None
    retired_on = b.retired_on_lap if b.retired_on_lap is not None else b.laps + 1
    if b.retired_ms is not None and b.laps == lap - 1 and retired_on == lap and ta < b.retired_ms:
        return Overtake(lap, a_num, b_num, OvertakeKind.RETIREMENT, _neutralised(a, b, lap), ta)
    return None


def after_lap(timing: TimingLine, number: int, lap: int) -> list[Overtake]:
    """Overtakes decided by ``number`` completing ``lap``: whom it passed and who passed it."""
    out = []
    for other in timing.cars:
        if other == number:
            continue
        for a, b in ((number, other), (other, number)):
            o = pair(timing, a, b, lap)
            if o is not None:
                out.append(o)
    return out


def after_retirement(timing: TimingLine, number: int) -> list[Overtake]:
    """RETIREMENT overtakes decided by ``number`` retiring: cars that passed it on the lap it
    retired on. When race control gave that lap and the car's earlier laps have not all arrived
    yet, nothing is decided now: its last lap's arrival decides it."""
    car = timing.cars[number]
    lap = car.retired_on_lap if car.retired_on_lap is not None else car.laps + 1
    if car.laps != lap - 1:
        return []
    return [o for other in timing.cars if other != number
            if (o := pair(timing, other, number, lap)) is not None]
