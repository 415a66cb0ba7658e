"""Qualifying: the order by best lap in each phase (Q1, Q2, Q3), gaps to the best time, and who is
knocked out where. Pure: laps and phase windows in, standings out.

The rules (FIA sporting regulations, as the timing screens show them):

- a lap belongs to the phase during which it *started* (a car on its flying lap when the flag
  falls finishes that lap and it counts); a lap that started before the phase did not;
- a deleted lap (track limits) does not count; the car keeps its best of the others;
- order within a phase: best time, then who set it first; cars without a time follow, in their
  order of the previous phase (in Q1, by car number);
- all cars take part in Q1; the fastest :func:`advancing` go on to Q2, the fastest of those to Q3;
  the others are knocked out in that phase and keep the position it gave them;
- the final classification is Q3's order, then the cars knocked out in Q2 and in Q1, each in the
  order of the phase that knocked them out.

>>> phases = [Phase(1, 0, 1000), Phase(2, 2000, 3000), Phase(3, 4000, 5000)]
>>> laps = [QualiLap(1, 1, 500, 90), QualiLap(2, 1, 600, 91), QualiLap(2, 2, 2600, 89),
...         QualiLap(1, 2, 2700, 88), QualiLap(1, 3, 4500, 87, deleted=True)]
>>> table = standings(laps, phases, drivers=[1, 2], advance=(2, 1))
>>> [(s.driver, s.best_ms, s.gap_ms) for s in table[2]]
[(1, 88, 0), (2, 89, 1)]
>>> [(s.driver, s.best_ms, s.knocked_out) for s in table[3]]
[(1, None, False)]
>>> [s.driver for s in classification(table)]
[1, 2]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Phase:
    """Qualifying part ``number`` (1-3), session ms from its start to its flag (``None``: running)."""

    number: int
    start_ms: int
    end_ms: int | None = None


@dataclass(frozen=True, slots=True)
class QualiLap:
    driver: int
    lap: int
    crossing_ms: int
    lap_time_ms: int | None
    deleted: bool = False

    @property
    def start_ms(self) -> int | None:
        return None if self.lap_time_ms is None else self.crossing_ms - self.lap_time_ms


@dataclass(frozen=True, slots=True)
class Standing:
    phase: int
    position: int
    driver: int
    best_ms: int | None
    best_lap: int | None
    gap_ms: int | None  # to the phase's best time
    interval_ms: int | None  # to the car above
    knocked_out: bool


def advancing(field_size: int) -> tuple[int, int]:
    """How many cars go on to Q2 and to Q3: 15 and 10 with 20 cars, 16 and 10 with 22."""
    return (16 if field_size >= 22 else min(15, field_size), min(10, field_size))


def phase_of(lap: QualiLap, phases: Sequence[Phase]) -> int | None:
    """The phase a timed lap counts for: the one it started in (``None``: none)."""
    start = lap.start_ms
    if start is None:
        return None
    for phase in phases:
        if phase.start_ms <= start and (phase.end_ms is None or start < phase.end_ms):
            return phase.number
    return None


def standings(laps: Iterable[QualiLap], phases: Sequence[Phase], drivers: Sequence[int],
              advance: tuple[int, int] | None = None) -> dict[int, list[Standing]]:
    """Each phase that has started → its standings, best first."""
    to_q2, to_q3 = advance or advancing(len(drivers))
    best: dict[tuple[int, int], QualiLap] = {}  # (phase, driver) → best counting lap
    for lap in laps:
        number = phase_of(lap, phases) if not lap.deleted else None
        if number is None or lap.lap_time_ms is None:
            continue
        held = best.get((number, lap.driver))
        if held is None or (lap.lap_time_ms, lap.crossing_ms) < (held.lap_time_ms, held.crossing_ms):
            best[(number, lap.driver)] = lap
    table: dict[int, list[Standing]] = {}
    entrants = sorted(drivers)
    cut = {1: to_q2, 2: to_q3, 3: len(drivers)}
    for phase in sorted(phases, key=lambda p: p.number):
        if phase.number not in cut:
            continue

        def key(driver: int, number: int = phase.number, before: list[int] = entrants) -> tuple[int, int, int, int]:
            lap = best.get((number, driver))
            if lap is None or lap.lap_time_ms is None:
                return (1, 0, 0, before.index(driver))  # no time: in the previous phase's order
            return (0, lap.lap_time_ms, lap.crossing_ms, 0)

        ordered = sorted(entrants, key=key)
        rows: list[Standing] = []
        top = best.get((phase.number, ordered[0])) if ordered else None
        previous: int | None = None
        for position, driver in enumerate(ordered, 1):
            set_by = best.get((phase.number, driver))
            time = set_by.lap_time_ms if set_by is not None else None
            gap = None if time is None or top is None or top.lap_time_ms is None else time - top.lap_time_ms
            rows.append(Standing(phase.number, position, driver, time, set_by.lap if set_by else None, gap,
                                 None if time is None or previous is None else time - previous,
                                 knocked_out=phase.end_ms is not None and position > cut[phase.number]))
            previous = time if time is not None else previous
        table[phase.number] = rows
        if phase.end_ms is None:
            break  # still running: nobody goes on yet
        entrants = ordered[:cut[phase.number]]
    return table


def classification(table: dict[int, list[Standing]]) -> list[Standing]:
    """The order now: the latest phase's standings, then those knocked out earlier, latest first."""
    if not table:
        return []
    latest = max(table)
    out = list(table[latest])
    for number in sorted(table, reverse=True)[1:]:
        out.extend(s for s in table[number] if s.knocked_out)
    return out
