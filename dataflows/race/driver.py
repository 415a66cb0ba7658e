"""Per-driver state (keyed ``race_id:driver_number``): lap sequence, last/best lap, pits, tyres.

A car's laps arrive in order (same key, same partition), so everything here is a function of
that car's own lap sequence and is the same on every replay. Pit stops are counted as
:mod:`strategy.pitstops` defines them; stint features need the race distance and are computed in
the race state (:class:`~dataflows.race.processor.RaceProcessor`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dataflows.outputs import Rejected
from schemas.model import Lap
from strategy.pitstops import pending_in_lap, stop_completed


@dataclass(slots=True, frozen=True)
class DriverUpdate:
    """A validated lap with the car's derived per-driver facts after it."""

    lap: Lap
    last_lap_ms: int | None
    best_lap_ms: int | None
    personal_best: bool
    pit_count: int
    #: in-lap number of a pit stop completed by this out-lap, else None
    pit_stop_lap: int | None
    stint: int
    compound: str | None
    tyre_age: int | None

    @property
    def race_id(self) -> str:
        return self.lap.race_id


@dataclass(slots=True)
class DriverState:
    """State of one car.

    >>> s = DriverState()
    >>> s.update(Lap("e1", "r", 16, 1, 95_000, 95_000)).best_lap_ms
    95000
    >>> s.update(Lap("e1", "r", 16, 1, 95_000, 95_000)) is None   # retry of the same record
    True
    >>> s.update(Lap("e3", "r", 16, 3, 285_000, 94_000)).reason
    'lap 3 of car 16 out of sequence: expected lap 2'
    """

    laps: int = 0
    last_event_id: str | None = None
    last_lap_ms: int | None = None
    best_lap_ms: int | None = None
    pit_count: int = 0
    stint: int = 1
    compound: str | None = None
    tyre_age: int | None = None
    pending_in_lap: int | None = None
    seen: set[str] = field(default_factory=set)

    def update(self, lap: Lap) -> DriverUpdate | Rejected | None:
        """Apply one lap; ``None`` for an exact retry (same ``event_id``), which is harmless."""
        if lap.event_id in self.seen:
            return None
        expected = self.laps + 1
        if lap.lap != expected:
            return Rejected(
                f"lap {lap.lap} of car {lap.driver_number} out of sequence: expected lap {expected}",
                "OUT_OF_SEQUENCE", "driver-state", race_id=lap.race_id,
            )
        self.seen.add(lap.event_id)
        self.laps = lap.lap
        self.last_event_id = lap.event_id
        self.last_lap_ms = lap.lap_time_ms

        personal_best = False
        if lap.lap_time_ms is not None and not lap.deleted and (
            self.best_lap_ms is None or lap.lap_time_ms < self.best_lap_ms
        ):
            personal_best = self.best_lap_ms is not None
            self.best_lap_ms = lap.lap_time_ms

        # in-lap then out-lap: a stop, unless the car sat in the pit lane under a red flag
        pit_stop_lap = stop_completed(self.pending_in_lap, lap.lap, lap.pit_out)
        if pit_stop_lap is not None:
            self.pit_count += 1
            self.stint += 1
        self.pending_in_lap = pending_in_lap(lap.lap, lap.pit_in, lap.track_status)
        if lap.compound is not None:
            if self.compound is not None and lap.compound != self.compound and pit_stop_lap is None:
                # compound change without a recorded stop (feed gap): still a new stint
                self.stint += 1
            self.compound = lap.compound
        self.tyre_age = lap.tyre_age
        return DriverUpdate(
            lap=lap,
            last_lap_ms=self.last_lap_ms,
            best_lap_ms=self.best_lap_ms,
            personal_best=personal_best,
            pit_count=self.pit_count,
            pit_stop_lap=pit_stop_lap,
            stint=self.stint,
            compound=self.compound,
            tyre_age=self.tyre_age,
        )
