"""The flag: who has finished, the classification and the last-lap hero.

The chequered flag falls when the leader completes the scheduled distance (or race control
shows it earlier). A car takes the flag at its first crossing at or after that instant, so
lapped cars finish on a lower lap. All of it is a function of crossing times.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from dataflows.race.timing import TimingLine


@dataclass(slots=True, frozen=True)
class Finisher:
    number: int
    lap: int
    crossing_ms: int
    lap_time_ms: int | None


def finishers(timing: TimingLine, chequered_ms: int | None) -> dict[int, Finisher]:
    """Cars that have taken the flag, with the lap on which they took it."""
    out: dict[int, Finisher] = {}
    if chequered_ms is None:
        return out
    for number, car in timing.cars.items():
        for i, t in enumerate(car.crossings):
            if t >= chequered_ms:
                out[number] = Finisher(number, i + 1, t, car.lap_times[i])
                break
    return out


def all_finished(timing: TimingLine, done: dict[int, Finisher]) -> bool:
    """True when every car that has not retired has taken the flag (and every retired car's laps
    up to the lap race control said it retired on have arrived)."""
    return bool(done) and all(
        n in done or (car.retired_ms is not None
                      and (car.retired_on_lap is None or car.laps >= car.retired_on_lap - 1))
        for n, car in timing.cars.items()
    )


def classification_order(timing: TimingLine, done: dict[int, Finisher]) -> list[int]:
    """Running or finished cars by laps desc then last crossing asc; retired cars after them.

    A finished car's laps are its laps at the flag.
    """

    def key(n: int) -> tuple[int, int, int, int]:
        car = timing.cars[n]
        f = done.get(n)
        laps = f.lap if f is not None else car.laps
        last = f.crossing_ms if f is not None else car.last_crossing()
        retired = 1 if (car.retired_ms is not None and f is None) else 0
        return (retired, -laps, last, car.grid_position)

    return sorted(timing.cars, key=key)


def classification_order_at(timing: TimingLine, done: dict[int, Finisher], t: int) -> list[int]:
    """:func:`classification_order` as it stood at instant ``t``: only crossings up to ``t`` count
    (so it does not depend on which later laps have already arrived)."""

    def key(n: int) -> tuple[int, int, int, int]:
        car = timing.cars[n]
        f = done.get(n)
        if f is not None and f.crossing_ms <= t:
            laps, last = f.lap, f.crossing_ms
        else:
            laps = bisect.bisect_right(car.crossings, t)
            last = car.crossings[laps - 1] if laps else -1
        retired = 1 if (car.retired_ms is not None and car.retired_ms <= t and (f is None or f.crossing_ms > t)) else 0
        return (retired, -laps, last, car.grid_position)

    return sorted(timing.cars, key=key)


def status_text(laps: int, winner_laps: int, retired: bool) -> str:
    """'Finished', '+1 Lap', '+N Laps' or 'Retired'."""
    if retired:
        return "Retired"
    down = winner_laps - laps
    if down <= 0:
        return "Finished"
    return f"+{down} Lap" if down == 1 else f"+{down} Laps"


@dataclass(slots=True, frozen=True)
class HeroResult:
    number: int
    lap: int
    lap_time_ms: int
    positions_gained: int
    final: bool


def last_lap_hero(
    timing: TimingLine, done: dict[int, Finisher], final_positions: dict[int, int]
) -> HeroResult | None:
    """Fastest own final lap among finishers (ties → earlier crossing), with positions gained.

    positions gained = position at the end of the car's previous lap - classified position.
    """
    best: Finisher | None = None
    for f in done.values():
        if f.lap_time_ms is None:
            continue
        if best is None or (f.lap_time_ms, f.crossing_ms) < (best.lap_time_ms or 0, best.crossing_ms):
            best = f
    if best is None or best.lap_time_ms is None:
        return None
    before = timing.position_at(best.number, best.lap - 1) or final_positions[best.number]
    return HeroResult(
        number=best.number,
        lap=best.lap,
        lap_time_ms=best.lap_time_ms,
        positions_gained=before - final_positions[best.number],
        final=all_finished(timing, done),
    )
