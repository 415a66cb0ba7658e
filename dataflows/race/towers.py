"""The timing tower at the end of every lap (the history store's ``standings``), whatever the batching.

The tower at the end of lap N is the timing line as it stood at the instant lap N was over for
everyone: the last crossing of lap N, or a later flag crossing of a lapped car that took the flag
without completing lap N (``ts_ms``). Each car shows its latest lap by that instant: order at the
line (laps completed, then crossing time; retired cars behind), gap and interval at the line (the
rule of :mod:`dataflows.race.gaps`, the line being the only loop), the car's status then (finished,
retired, in the pit lane after an in-lap, running), and its lap times, tyre and stop count as of
that lap. A leader lapping the last car may show lap N+1 in the
tower of lap N: that is how the tower looked when lap N ended.

A tower is emitted once it is *settled*: every car has completed lap N, taken the flag, retired
(with all its laps in) or been given up on as silent (see ``RaceState.gone_silent``), and the race's
watermark says every crossing up to ``ts_ms`` has arrived. Its content is then a function of event
times alone, so a race processed record by record and the same race processed in one backlog batch
give the same towers. A fact that arrives later and changes a settled tower (the laps of a car
given up on, a retirement or the flag read late from another partition) emits that tower again,
with a higher version.

Pure: the race state's timing line and the per-lap facts recorded here are all it reads.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dataflows.outputs import Tower
from dataflows.race.driver import DriverUpdate
from dataflows.race.finish import Finisher, classification_order_at
from dataflows.race.gaps import Passages, tower_gaps
from dataflows.race.settle import watermark
from dataflows.race.timing import CarTiming
from schemas.model import CarStatus, LeaderboardRow, TrackStatus

if TYPE_CHECKING:
    from dataflows.race.state import RaceState


@dataclass(slots=True, frozen=True)
class LapFacts:
    """What the tower shows of a car as of one of its laps, beyond the timing line."""

    best_lap_ms: int | None
    compound: str | None
    tyre_age: int | None
    pit_count: int
    track_status: TrackStatus


def _done_with(tc: CarTiming, lap: int, finished: Finisher | None, silent: bool) -> bool:
    """True when car ``tc`` will complete no (more) crossing that belongs in the tower of ``lap``."""
    if tc.laps >= lap or finished is not None or silent:
        return True
    return tc.retired_ms is not None and (tc.retired_on_lap is None or tc.laps >= tc.retired_on_lap - 1)


def _retired_by(tc: CarTiming, end: int) -> bool:
    return tc.retired_ms is not None and tc.retired_ms <= end


@dataclass(slots=True)
class TowerBook:
    """Per-lap facts of every car, and which towers have gone out (kept in the race's state)."""

    #: car → facts of its laps 1..n (index lap - 1)
    facts: dict[int, list[LapFacts]] = field(default_factory=dict)
    #: end instant of every tower emitted so far (index lap - 1); towers go out in lap order
    ends: list[int] = field(default_factory=list)
    #: earliest session time of a fact that arrived after a tower covering it went out
    dirty_from: int | None = None
    #: the chequered flag and each car's retirement when last looked at: a change re-emits the towers after it
    chequered_ms: int | None = None
    retired_ms: dict[int, int | None] = field(default_factory=dict)

    def observe(self, update: DriverUpdate) -> None:
        """A lap the race state applied (call after :meth:`RaceState.apply` accepted it)."""
        lap = update.lap
        laps = self.facts.setdefault(lap.driver_number, [])
        if lap.lap != len(laps) + 1:
            return  # cannot happen for a lap the race state accepted
        laps.append(LapFacts(update.best_lap_ms, update.compound, update.tyre_age, update.pit_count,
                             lap.track_status))
        if self.ends and lap.crossing_ms <= self.ends[-1]:
            self._dirty(lap.crossing_ms)  # a late lap (a car given up on, or one that retired)

    def _dirty(self, ts_ms: int) -> None:
        self.dirty_from = ts_ms if self.dirty_from is None else min(self.dirty_from, ts_ms)

    def _check_flags(self, state: RaceState) -> None:
        if state.chequered_ms != self.chequered_ms:
            self._dirty(min(t for t in (self.chequered_ms, state.chequered_ms) if t is not None))
            self.chequered_ms = state.chequered_ms
        retired = self.retired_ms
        for n, tc in state.timing.cars.items():
            t = tc.retired_ms
            if t != retired.get(n):
                before = retired.get(n)
                self._dirty(min(x for x in (t, before) if x is not None))
                retired[n] = t

    def due(self, state: RaceState) -> list[Tower]:
        """Towers to write now: those of laps newly settled, and those a late fact changed."""
        out: list[Tower] = []
        self._check_flags(state)
        if self.dirty_from is not None:
            since, self.dirty_from = self.dirty_from, None
            for lap in range(1, len(self.ends) + 1):
                if self.ends[lap - 1] >= since:
                    end = self._end(state, lap)
                    if end is not None:
                        self.ends[lap - 1] = end[0]
                        out.append(self.tower(state, lap, *end))
        mark: float | None = None
        while True:
            lap = len(self.ends) + 1
            end = self._end(state, lap) if self._settled(state, lap) else None
            if end is None:
                break
            if mark is None:
                mark = watermark(state)
            if end[0] >= mark:
                break  # a crossing up to the end of this lap may still be on its way
            self.ends.append(end[0])
            out.append(self.tower(state, lap, *end))
        return out

    def _settled(self, state: RaceState, lap: int) -> bool:
        if not state.timing.by_lap.get(lap):
            return False
        finished = state.finished
        return all(_done_with(tc, lap, finished.get(n), state.gone_silent(n)) for n, tc in state.timing.cars.items())

    def _end(self, state: RaceState, lap: int) -> tuple[int, TrackStatus] | None:
        """(instant lap ``lap`` was over for everyone, track status of the lap that closed it)."""
        line = state.timing.by_lap.get(lap)
        if not line:
            return None
        end, car, car_lap = line[-1][0], line[-1][1], lap
        for f in state.finished.values():
            if f.lap < lap and f.crossing_ms > end:
                end, car, car_lap = f.crossing_ms, f.number, f.lap
        facts = self.facts.get(car, [])
        status = facts[car_lap - 1].track_status if len(facts) >= car_lap else TrackStatus.GREEN
        return end, status

    def tower(self, state: RaceState, lap: int, end: int, track_status: TrackStatus) -> Tower:
        """The tower of ``lap``, which ended at ``end`` (see the module docstring)."""
        timing = state.timing
        finished = {n: f for n, f in state.finished.items() if f.crossing_ms <= end}
        order = classification_order_at(timing, state.finished, end)
        positions = {n: i + 1 for i, n in enumerate(order)}
        rows: list[LeaderboardRow] = []
        laps_at = {n: bisect.bisect_right(timing.cars[n].crossings, end) for n in order}
        retired_at = {n: n not in finished and _retired_by(timing.cars[n], end) for n in order}
        # at the line alone (one loop a lap), each car cut at its crossings up to `end`
        figures = tower_gaps([None if retired_at[n] else Passages(1, laps_at[n], timing.cars[n].crossings)
                              for n in order])
        for i, n in enumerate(order):
            tc = timing.cars[n]
            driver = state.cars[n].driver
            f = finished.get(n)
            laps = laps_at[n]
            facts = self.facts.get(n, [])
            fact = facts[laps - 1] if 0 < laps <= len(facts) else None
            if f is not None:
                status = CarStatus.FINISHED
            elif retired_at[n]:
                status = CarStatus.RETIRED
            elif laps and tc.pit_flags[laps - 1][0]:
                status = CarStatus.PIT
            else:
                status = CarStatus.RUNNING
            gap_ms, gap_laps, int_ms, int_laps = figures[i]
            gained = None
            if f is not None:
                before = timing.position_at(n, f.lap - 1)
                gained = None if before is None else before - positions[n]
            rows.append(LeaderboardRow(
                position=i + 1, driver_number=n, code=driver.code, team=driver.team,
                team_colour=driver.team_colour, laps=laps, progress=float(laps), status=status,
                timing_position=i + 1, gap_ms=gap_ms, gap_laps=gap_laps, interval_ms=int_ms,
                interval_laps=int_laps, last_lap_ms=tc.lap_times[laps - 1] if laps else None,
                best_lap_ms=fact.best_lap_ms if fact else None, compound=fact.compound if fact else None,
                tyre_age=fact.tyre_age if fact else None, pit_count=fact.pit_count if fact else 0,
                positions_gained_last_lap=gained,
            ))
        return Tower(state.race_id, lap, state.version, end, track_status, rows)
