"""What the race-level operator does with a batch: buffer until the session is known, apply,
and coalesce leaderboard snapshots.

Coalescing: a change at the timing line (a lap completed, a pit, a retirement, a flag) produces a
snapshot at the end of the batch it arrived in, at once. A change seen only in telemetry (the
running order, the cars' positions on the map) is throttled to ``max_rate_hz`` snapshots per
second of wall-clock time: the first goes out at once (leading edge) and, if more changes follow
within the interval, one more goes out when it ends (trailing edge), so the final state is never
held back. Time is passed in, so this
stays pure and testable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from dataflows.outputs import LapChart, RaceOutput, Rejected
from dataflows.race.board import leaderboard
from dataflows.race.driver import DriverUpdate
from dataflows.race.schedule import StrategySchedule
from dataflows.race.settle import Settler
from dataflows.race.state import RaceState
from dataflows.race.stints import StintTracker
from dataflows.race.strategist import Strategist
from dataflows.race.towers import TowerBook
from schemas.model import Control, ControlKind, Leaderboard, Session, Stint

#: race control's verdicts on a lap that went out already
LAP_VERDICTS = (ControlKind.LAP_DELETED, ControlKind.LAP_REINSTATED)
#: records held for a race whose session has not arrived yet; beyond this they are rejected
MAX_PENDING = 500_000


#: the layout of a pickled :class:`RaceProcessor` in the flow's recovery snapshots; raise it when
#: the pickled shape changes (fields of the processor or of the state it holds)
SNAPSHOT_FORMAT = 3


class SnapshotMismatch(RuntimeError):
    """A recovery snapshot written by a racewire whose race state has another shape."""


@dataclass(slots=True)
class Throttle:
    """Leading + trailing edge rate limit.

    >>> t = Throttle(min_interval_s=0.25)
    >>> t.offer(10.0), t.offer(10.1), t.due(10.2), t.due(10.3)
    (True, False, False, True)
    """

    min_interval_s: float
    last_s: float = float("-inf")
    pending: bool = False

    def offer(self, now_s: float) -> bool:
        """A change happened: True if it may go out now, else it is held as pending."""
        if now_s - self.last_s >= self.min_interval_s:
            self.last_s, self.pending = now_s, False
            return True
        self.pending = True
        return False

    def sent(self, now_s: float) -> None:
        """A snapshot went out for another reason (it carries the pending change too)."""
        self.last_s, self.pending = now_s, False

    def due(self, now_s: float) -> bool:
        """Trailing edge: True when a pending change should go out now."""
        if self.pending and now_s - self.last_s >= self.min_interval_s:
            self.last_s, self.pending = now_s, False
            return True
        return False

    def deadline(self) -> float | None:
        return self.last_s + self.min_interval_s if self.pending else None


@dataclass(slots=True)
class RaceProcessor:
    race_id: str
    max_rate_hz: float = 4.0
    state: RaceState | None = None
    pending: list[tuple[Any, Any]] = field(default_factory=list)
    throttle: Throttle = field(init=False)
    #: turns a message reference into one that may be pickled: applied to the records held in
    #: :attr:`pending` only when the processor is pickled (a snapshot), not to each record held
    keep_ref: Any = field(default=None, repr=False)
    #: strategy calls at the end of every lap (None: no calls)
    strategist: Strategist | None = None
    #: the events that wait for the watermark (see :mod:`dataflows.race.settle`)
    settler: Settler = field(default_factory=Settler)
    #: when the strategy calls run (see :mod:`dataflows.race.schedule`)
    schedule: StrategySchedule = field(default_factory=StrategySchedule)
    #: the timing tower at the end of every lap (see :mod:`dataflows.race.towers`)
    towers: TowerBook = field(default_factory=TowerBook)
    #: each car's stint features (they need the race distance, which the session gives)
    stints: dict[int, StintTracker] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.throttle = Throttle(1.0 / self.max_rate_hz)

    def __getstate__(self) -> list[Any]:
        keep = self.keep_ref
        return [SNAPSHOT_FORMAT, *([(record, keep(ref)) for record, ref in self.pending]
                                   if f.name == "pending" and keep is not None
                                   else getattr(self, f.name) for f in fields(self))]

    def __setstate__(self, state: list[Any]) -> None:
        if not state or state[0] != SNAPSHOT_FORMAT or len(state) != len(fields(self)) + 1:
            found = state[0] if state and isinstance(state[0], int) else "older than format 2"
            raise SnapshotMismatch(
                f"the recovery snapshot holds race state of another racewire version (format {found}, this "
                f"one reads {SNAPSHOT_FORMAT}); start the flow with a fresh recovery directory (the input "
                "topics are read again from the start and the outputs are idempotent)")
        for f, value in zip(fields(self), state[1:], strict=True):
            object.__setattr__(self, f.name, value)

    def on_batch(self, items: Iterable[tuple[Any, Any]], now_s: float) -> list[RaceOutput]:
        """Apply ``(record, ref)`` pairs; returns events, rejections and at most one snapshot.

        ``now_s`` is wall-clock (monotonic) time: it paces telemetry snapshots and bounds how long
        strategy calls wait for a car missing from the end of a lap."""
        out: list[RaceOutput] = []
        for record, ref in items:
            state = self.state
            if state is None:
                if isinstance(record, Session):
                    self.state = RaceState(record)
                    held, self.pending = self.pending, []
                    out.extend(self.on_batch(held, now_s))
                elif len(self.pending) < MAX_PENDING:
                    self.pending.append((record, ref))
                else:
                    out.append(Rejected(
                        f"no f1.race.session record for race {self.race_id} after "
                        f"{MAX_PENDING} records; publish the session first", "NO_SESSION", "race-state",
                        self._kept(ref), self.race_id))
                continue
            result = state.apply(record)
            if isinstance(result, Rejected):
                out.append(result.attach(self._kept(ref)))
            else:
                out.extend(result)
                if isinstance(record, Control) and record.kind in LAP_VERDICTS and record.driver_number \
                        and record.lap:
                    out.extend(self.settler.verdict(state, record.driver_number, record.lap,
                                                    record.kind is ControlKind.LAP_DELETED))
                if isinstance(record, DriverUpdate):
                    self.settler.observe(record, state.deleted_laps)
                    self.towers.observe(record)
                    stints = self._stints(state, record)
                    out.extend(stints)
                    if self.strategist is not None:
                        self.strategist.observe(record, stints[-1])
        state = self.state
        if state is not None:
            out.extend(self.settler.settle(state))
            if not state.kind.timed:  # a race's laps: the lap chart, the tower at each lap's end, strategy
                out.extend(LapChart(self.race_id, lap, order) for lap, order in state.take_lap_charts().items())
                out.extend(self.towers.due(state))
                out.extend(self._calls(state, now_s))
        out.extend(self._snapshot(now_s))
        return out

    def _kept(self, ref: Any) -> Any:
        keep = self.keep_ref
        return ref if keep is None else keep(ref)

    def _calls(self, state: RaceState, now_s: float) -> list[RaceOutput]:
        """Strategy calls for the laps newly complete."""
        strategist = self.strategist
        if strategist is None:
            return []
        return [call for lap in self.schedule.laps(state, now_s) for call in strategist.calls(state, lap)]

    def _stints(self, state: RaceState, u: DriverUpdate) -> list[Stint]:
        """The stint this lap closed (if it started a new one), then the current stint's features."""
        lap = u.lap
        tracker = self.stints.get(lap.driver_number)
        if tracker is None:
            tracker = self.stints[lap.driver_number] = StintTracker(state.session.total_laps)
        return tracker.update(lap.race_id, lap.driver_number, lap.lap, lap.lap_time_ms, compound=u.compound,
                              tyre_age=lap.tyre_age, stint=u.stint, pit_in=lap.pit_in, pit_out=lap.pit_out,
                              track_status=lap.track_status)

    def _snapshot(self, now_s: float) -> list[RaceOutput]:
        state = self.state
        if state is None:
            return []
        if state.timing_changed:
            self.throttle.sent(now_s)
            return [self._publish(state, "timing")]
        if state.order_changed and self.throttle.offer(now_s):
            return [self._publish(state, "telemetry")]
        return []

    @staticmethod
    def _publish(state: RaceState, reason: str) -> Leaderboard:
        state.published()
        return leaderboard(state, reason)

    def on_notify(self, now_s: float) -> list[RaceOutput]:
        """Trailing edge of the telemetry throttle, and strategy calls for a lap that stopped
        waiting for a missing car."""
        state = self.state
        if state is None:
            return []
        out = self._calls(state, now_s)
        if state.order_changed and self.throttle.due(now_s):
            out.append(self._publish(state, "telemetry"))
        return out

    def notify_at_s(self) -> float | None:
        state = self.state
        if state is None:
            return None
        deadlines = [self.schedule.deadline_s() if self.strategist is not None else None,
                     self.throttle.deadline() if state.order_changed else None]
        return min((d for d in deadlines if d is not None), default=None)
