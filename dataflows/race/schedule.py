"""When the strategy calls for a lap run: once the lap is complete for every car still running.

Lap N is complete when the leader has finished it (before the chequered flag, N below the race
distance) and every car still running has crossed the line at its end or is known to be a lap
down (the leader's lap N+1 crossing is behind the watermark, see :mod:`dataflows.race.settle`).
So the state the calls see is the state at the end of lap N, whatever order the partitions were
read in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dataflows.race.settle import watermark

if TYPE_CHECKING:
    from dataflows.race.state import RaceState

#: wall-clock seconds the strategy calls for a lap wait for a car missing from its end once the
#: leader is two laps further on (see :meth:`StrategySchedule.laps`)
STRAGGLER_GRACE_S = 15.0


def missing(state: RaceState, lap: int) -> list[int]:
    """Running cars that have not crossed the line at the end of ``lap`` (nor been given up on)."""
    finished = state.finished
    return [number for number, tc in state.timing.cars.items()
            if tc.laps < lap and tc.retired_ms is None and number not in finished
            and not state.gone_silent(number)]


def lap_complete(state: RaceState, lap: int) -> bool:
    """Every car still running has crossed the line at the end of ``lap`` or is known to be a lap down."""
    following = state.timing.by_lap.get(lap + 1)
    mark: float | None = None
    for _number in missing(state, lap):
        if following is None:
            return False
        if mark is None:
            mark = watermark(state)
        if following[0][0] >= mark:
            return False  # not yet known whether this car is a lap down
    return True


@dataclass(slots=True)
class StrategySchedule:
    """The laps handed out for strategy calls so far, and the wait for a missing car (kept in the
    race step's state)."""

    #: the last lap handed out by :meth:`laps`
    lap: int = 0
    #: (lap, cars that had completed it, wall-clock s) while a lap waits for missing cars
    waiting: tuple[int, int, float] | None = None

    def laps(self, state: RaceState, now_s: float) -> list[int]:
        """Laps newly complete for strategy calls, oldest first, each returned once.

        A car that stops without a retirement message would hold the calls back for ever, and
        from the records alone it looks just like a car whose partition is read late (in a fast
        replay one partition can run laps ahead of another). So the calls go ahead without the
        missing cars only when both hold: the leader has completed lap N+2, and nothing has
        completed lap N for :data:`STRAGGLER_GRACE_S` seconds of wall-clock time (``now_s``); a
        late partition catches up within that, a stopped car does not. Such a car is given up on
        (:meth:`RaceState.give_up_on`): not waited for again (nor holding back the lapped-car
        test) until it crosses the line once more. :meth:`deadline_s` says when to look again if
        nothing else arrives.
        """
        out: list[int] = []
        total = state.session.total_laps
        by_lap = state.timing.by_lap
        while True:
            n = self.lap + 1
            line = by_lap.get(n)
            if n >= total or not line:
                break
            if state.chequered_ms is not None and line[0][0] >= state.chequered_ms:
                break
            if not lap_complete(state, n):
                if not by_lap.get(n + 2):
                    self.waiting = None
                    break
                crossed = len(line)
                if self.waiting is None or self.waiting[:2] != (n, crossed):
                    self.waiting = (n, crossed, now_s)  # (re)start the grace period
                if now_s - self.waiting[2] < STRAGGLER_GRACE_S:
                    break
                state.give_up_on(missing(state, n))
            self.waiting = None
            out.append(n)
            self.lap = n
        return out

    def deadline_s(self) -> float | None:
        """When :meth:`laps` gives up waiting for a car missing from the end of a lap."""
        waiting = self.waiting
        return None if waiting is None else waiting[2] + STRAGGLER_GRACE_S
