"""The watermark, and the events that wait for it.

Partitions are read in any interleaving, so a lap completed early may arrive late. The watermark
(:func:`watermark`) is the instant before which every lap completed has arrived, as far as the
records read so far tell. Events whose content depends on *every* earlier lap wait until they are
behind it (:class:`Settler`): FASTEST_LAP (a lap that beats every lap completed before it),
FINISHED with the position at the flag, the provisional and final LAST_LAP_HERO and the
CLASSIFICATION. So the events are the same whatever order the partitions are read in.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dataflows.race.board import classification, positions_gained
from dataflows.race.driver import DriverUpdate
from dataflows.race.finish import classification_order_at, last_lap_hero

if TYPE_CHECKING:
    from dataflows.race.state import RaceState
    from schemas.model import RaceEvent


#: timed sessions: a car whose latest crossing is this much older than the newest is in the garage
GARAGE_AFTER_MS = 180_000


def watermark(state: RaceState, skip_silent: bool = True) -> float:
    """Every lap completed before this instant (session ms) has arrived, as far as the records
    read so far tell: each car has been seen past it, at the line or, with all its laps in, in
    telemetry (which at live rate is a fraction of a second). Finishers and retired cars with
    all their laps in do not hold it back; nor, with ``skip_silent``, do cars the strategy calls
    gave up on (:meth:`RaceState.gone_silent`).

    In a session ordered by best lap, cars spend most of it in the garage, where they cross no
    line for many minutes: a car that has not run yet, or whose latest crossing is more than
    :data:`GARAGE_AFTER_MS` before the newest crossing read, does not hold it back (no lap on
    track takes that long; its next timed lap is an out-lap away). This assumes the input
    partitions are read about in step, as they are live; a replay whose partitions are read far
    apart may settle a fastest lap that a lagging car's lap beats later, which then comes as the
    next FASTEST_LAP."""
    silent = state.silent if skip_silent else None
    bound = float("inf")
    cars, finished = state.cars, state.finished
    newest = max((tc.last_crossing() for tc in state.timing.cars.values() if tc.laps), default=0) \
        if state.kind.timed else None
    for n, tc in state.timing.cars.items():
        if n in finished or (silent and silent.get(n) == tc.laps):
            continue
        if newest is not None and (not tc.laps or tc.last_crossing() < newest - GARAGE_AFTER_MS):
            continue
        if tc.retired_ms is not None and (tc.retired_on_lap is None or tc.laps >= tc.retired_on_lap - 1):
            continue
        car = cars.get(n)
        # all of this car's laps that ended at or before `seen - 1` have arrived
        seen = float(tc.last_crossing() + 1)
        if car is not None and car.telemetry_lap - 1 <= tc.laps:
            seen = max(seen, car.telemetry_ms + 1)
        bound = min(bound, seen)
    return bound


@dataclass(slots=True)
class Settler:
    """What waits for the watermark, and what of it went out (kept in the race step's state)."""

    #: valid laps not yet confirmed as (not) a new fastest lap: (crossing, time, car, lap)
    fl_pending: list[tuple[int, int, int, int]] = field(default_factory=list)
    #: (time, crossing) of the fastest among the confirmed laps
    fl_best: tuple[int, int] | None = None
    #: finishers whose FINISHED event went out
    announced: set[int] = field(default_factory=set)
    hero_announced: int | None = None
    classified: bool = False
    #: the watermark of the last settle: laps that crossed before it are confirmed
    mark: float = float("-inf")

    def observe(self, update: DriverUpdate, deleted: set[tuple[int, int]] | frozenset[tuple[int, int]] = frozenset()
                ) -> None:
        """A lap the race state applied (call after :meth:`RaceState.apply` accepted it);
        ``deleted``: the race state's deleted laps (a verdict may come before its lap)."""
        lap = update.lap
        if lap.lap_time_ms is not None and not lap.deleted and (lap.driver_number, lap.lap) not in deleted:
            bisect.insort(self.fl_pending, (lap.crossing_ms, lap.lap_time_ms, lap.driver_number, lap.lap))

    def verdict(self, state: RaceState, n: int, lap: int, deleted: bool) -> list[RaceEvent]:
        """Race control deleted (reinstated) a lap that had gone out: it leaves (joins) the laps
        waiting for the watermark, and the fastest of the confirmed laps is worked out again; when
        that changes, a FASTEST_LAP event names the lap that holds it now."""
        if deleted:
            self.fl_pending = [p for p in self.fl_pending if (p[2], p[3]) != (n, lap)]
        else:
            for t, crossing, number in ((t, c, n) for t, c, x in state.counted_laps(n) if x == lap):
                entry = (crossing, t, number, lap)
                if crossing >= self.mark and entry not in self.fl_pending:
                    bisect.insort(self.fl_pending, entry)
        confirmed = min(((t, c, car, x) for car in state.cars for t, c, x in state.counted_laps(car)
                         if c < self.mark), default=None)
        best = None if confirmed is None else (confirmed[0], confirmed[1])
        if best == self.fl_best:
            return []
        self.fl_best = best
        if confirmed is None:
            return []
        e = state.events.fastest_lap(confirmed[2], confirmed[3], confirmed[1], confirmed[0])
        return [] if e is None else [e]

    def settle(self, state: RaceState) -> list[RaceEvent]:
        """The events now behind the watermark: FASTEST_LAP for laps now known to beat every lap
        completed before them, then the finishers' events.

        The leaderboard's fastest lap changes as soon as a lap arrives; its *event* waits until
        no earlier lap can still arrive.
        """
        if not self.fl_pending and not state.finished:
            return []
        mark = watermark(state, skip_silent=False)
        self.mark = mark
        out: list[RaceEvent] = []
        pending = self.fl_pending
        while pending and pending[0][0] < mark:
            crossing, time_ms, n, lap = pending.pop(0)
            if self.fl_best is not None and (time_ms, crossing) >= self.fl_best:
                continue
            self.fl_best = (time_ms, crossing)
            e = state.events.fastest_lap(n, lap, crossing, time_ms)
            if e is not None:
                out.append(e)
        if state.finished:
            out.extend(self._finishers(state, mark))
        return out

    def _finishers(self, state: RaceState, mark: float) -> list[RaceEvent]:
        """Finishers whose flag crossing is behind the watermark, in crossing order: each with
        its position as of that instant, and the (provisional) hero as of that instant."""
        log, finished = state.events, state.finished
        out: list[RaceEvent | None] = []
        for f in sorted(finished.values(), key=lambda x: x.crossing_ms):
            if f.number in self.announced or f.crossing_ms >= mark:
                continue
            self.announced.add(f.number)
            t = f.crossing_ms
            order = classification_order_at(state.timing, finished, t)
            pos = {n: i + 1 for i, n in enumerate(order)}
            out.append(log.finished(f.number, f.lap, t, pos[f.number], positions_gained(state, f.number, pos)))
            so_far = {n: x for n, x in finished.items() if x.crossing_ms <= t}
            hero = last_lap_hero(state.timing, so_far, pos)
            last_one = state.final and len(self.announced) == len(finished)
            if hero is not None and hero.number != self.hero_announced and not last_one:
                self.hero_announced = hero.number
                out.append(log.hero(hero, finished[hero.number].crossing_ms, provisional=True))
        if state.final and mark == float("inf") and not self.classified:
            self.classified = True
            if state.hero is not None:
                out.append(log.hero(state.hero, finished[state.hero.number].crossing_ms, provisional=False))
            out.append(log.classification(max(f.crossing_ms for f in finished.values()),
                                          state.session.total_laps, classification(state)))
        return [e for e in out if e is not None]
