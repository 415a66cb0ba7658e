"""Race-level state (keyed ``race_id``): what the inputs say, and applying them.

``RaceState.apply(record)`` takes one input (a :class:`Session`, a :class:`Control`, a
:class:`Telemetry` sample, a :class:`Weather` measurement, or a :class:`DriverUpdate` from the
per-driver step) and returns the
race events it causes, or a :class:`Rejected`. Every event id is derived from the facts of the
event, and every decision about laps is a function of crossing times, so the same input gives the
same events whatever the interleaving of partitions.

The other jobs read this state, each in its own module: the events and their text
(:mod:`~dataflows.race.events`), the watermark and the events that wait for it
(:mod:`~dataflows.race.settle`), the live tower and the classification
(:mod:`~dataflows.race.board`), when the strategy calls run (:mod:`~dataflows.race.schedule`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from dataflows.outputs import Rejected
from dataflows.race import overtakes as ot
from dataflows.race.driver import DriverUpdate
from dataflows.race.events import EventLog
from dataflows.race.finish import Finisher, HeroResult, all_finished, classification_order, finishers, last_lap_hero
from dataflows.race.gaps import LoopTimes, loops_per_lap
from dataflows.race.live_order import LiveOrder
from dataflows.race.qualifying import Phase
from dataflows.race.timing import TimingLine
from schemas.model import (
    Control,
    ControlKind,
    Driver,
    FastestLap,
    RaceEvent,
    Session,
    SessionKind,
    Telemetry,
    TrackStatus,
    Weather,
)

#: default hysteresis of the live order, metres (two cars side by side are < 5 m apart)
HYSTERESIS_M = 15.0
_FALLBACK_TRACK_M = 5000


@dataclass(slots=True)
class CarInfo:
    """Per-car facts for the tower, as last reported by the per-driver step and telemetry."""

    driver: Driver
    last_lap_ms: int | None = None
    best_lap_ms: int | None = None
    pit_count: int = 0
    compound: str | None = None
    tyre_age: int | None = None
    stint: int = 1
    in_pit: bool = False
    x: float | None = None
    y: float | None = None
    speed_kph: float | None = None
    telemetry_ms: int = -1
    telemetry_lap: int = 0
    #: race progress of the newest telemetry sample (laps + fraction)
    telemetry_progress: float = 0.0
    #: passage times at the virtual timing loops its telemetry reached (see :mod:`dataflows.race.gaps`)
    loops: LoopTimes = field(default_factory=LoopTimes)
    #: race progress from which a sample may reach a new loop (see :meth:`LoopTimes.sample`): the
    #: one test each sample pays for the loops
    next_loop: float = 0.0


#: low bits of a state version: the count of input records applied
VERSION_APPLIED_BITS = 24
_APPLIED_MASK = (1 << VERSION_APPLIED_BITS) - 1


def race_version(ts_ms: int, applied: int) -> int:
    """A race state's version: its session time (ms, the newest event time applied) in the high
    bits, the count of input records applied in the low :data:`VERSION_APPLIED_BITS`.

    Stores keep the highest version they were given. Counting records alone let a version go
    backwards: a flow restarted from a snapshot that re-read fewer records than before (records
    the broker had lost) never wrote its final state again. With the session time first, a state
    further into the session always wins; at the same session time, the one that applied more.
    Runs that apply the same records (1 or N workers, a replay) reach the same version.

    >>> race_version(5_000, 3) > race_version(4_999, 1_000_000)
    True
    >>> applied_of(race_version(5_000, 3))
    3
    """
    return (max(0, ts_ms) << VERSION_APPLIED_BITS) | min(applied, _APPLIED_MASK)


def applied_of(version: int) -> int:
    """The count of input records applied that a :func:`race_version` carries."""
    return version & _APPLIED_MASK


class RaceState:
    """All race-level state of one race, and applying inputs to it."""

    def __init__(self, session: Session) -> None:
        self.race_id = session.race_id
        self.session = session
        #: a race or sprint (order by distance), or a session ordered by best lap (see :attr:`SessionKind.timed`)
        self.kind: SessionKind = session.session_type
        #: qualifying parts: number → (start, flag) in session ms, as race control's PART_START /
        #: PART_END said (either may come first)
        self.parts: dict[int, tuple[int | None, int | None]] = {}
        #: the session clock: (time left in ms, at session ms, running down), the newest by time
        self.clock: tuple[int, int, bool] | None = None
        #: the newest weather measurement
        self.weather: Weather | None = None
        grid = {n: i + 1 for i, n in enumerate(session.grid)}
        for d in session.drivers:
            grid.setdefault(d.number, len(grid) + 1)
        self.timing = TimingLine(grid, grid_known=bool(session.grid))
        self.cars: dict[int, CarInfo] = {d.number: CarInfo(d) for d in session.drivers}
        track_m = session.track_length_m or _FALLBACK_TRACK_M
        start_order = sorted(grid, key=grid.__getitem__)
        self.live = LiveOrder(start_order, hysteresis=HYSTERESIS_M / track_m)
        #: virtual timing loops per lap (fixed for the race: the loops' passage times index them)
        self.loops_per_lap = loops_per_lap(track_m)
        self.track_status = TrackStatus.GREEN
        self.track_status_ms = -1
        self.chequered_ms: int | None = None
        #: the fastest lap so far (the tower's; its event waits for the watermark, see settle.py)
        self.fastest: FastestLap | None = None
        #: (car, lap) whose time race control deleted: on the lap's record, or by a verdict after the
        #: lap went out (LAP_DELETED); a lap that arrives after its verdict is taken as deleted too
        self.deleted_laps: set[tuple[int, int]] = set()
        self.finished: dict[int, Finisher] = {}
        self.hero: HeroResult | None = None
        self.final = False
        #: input records applied (session, laps, telemetry, control; the first session is the one
        #: the state is made from); see :func:`race_version`
        self.applied = 1
        self.ts_ms = 0
        self.events = EventLog(self.race_id, self.cars)
        #: cars the strategy calls stopped waiting for, with their lap count then (see :meth:`give_up_on`)
        self.silent: dict[int, int] = {}
        #: laps whose order at the timing line changed since last taken (see ``take_lap_charts``)
        self._charts_changed: set[int] = set()
        #: something at the timing line changed since the last snapshot
        self._timing_changed = True
        #: only telemetry (running order, car positions) changed since the last snapshot
        self._order_changed = False

    @property
    def version(self) -> int:
        return race_version(self.ts_ms, self.applied)

    def size(self) -> int:
        """How much this state holds: cars, laps at the timing line and events emitted."""
        return len(self.cars) + sum(c.laps for c in self.timing.cars.values()) + len(self.events)

    # ------------------------------------------------------------------ changes since the last snapshot
    @property
    def timing_changed(self) -> bool:
        """Something at the timing line changed (a lap, a pit, a retirement, a flag) since :meth:`published`."""
        return self._timing_changed

    @property
    def order_changed(self) -> bool:
        """Telemetry moved the running order or the cars since :meth:`published`."""
        return self._order_changed

    def published(self) -> None:
        """A snapshot of the state as it is now went out."""
        self._timing_changed = self._order_changed = False

    def take_lap_charts(self) -> dict[int, list[int]]:
        """Order at the timing line of each lap that changed since last taken: the cars that
        completed it, by crossing time (the lap chart)."""
        charts = {lap: [n for _t, n in self.timing.by_lap.get(lap, [])] for lap in sorted(self._charts_changed)}
        self._charts_changed.clear()
        return charts

    # ------------------------------------------------------------------ cars given up on
    def give_up_on(self, cars: list[int]) -> None:
        """Stop waiting for ``cars`` (missing from the end of a lap, see :mod:`dataflows.race.schedule`)
        until they cross the line again."""
        self.silent.update((c, self.timing.cars[c].laps) for c in cars)

    def gone_silent(self, number: int) -> bool:
        """True for a car given up on (:meth:`give_up_on`) that has not crossed the line since."""
        tc = self.timing.cars.get(number)
        return tc is not None and self.silent.get(number) == tc.laps

    # ------------------------------------------------------------------ input
    def apply(self, record: object) -> list[RaceEvent] | Rejected:
        if isinstance(record, Telemetry):
            return self._telemetry(record)
        if isinstance(record, DriverUpdate):
            return self._lap(record)
        if isinstance(record, Control):
            return self._control(record)
        if isinstance(record, Session):
            return self._session(record)
        if isinstance(record, Weather):
            return self._weather(record)
        return self._rejected(f"unsupported record {type(record).__name__}", "INVALID")

    def _rejected(self, reason: str, error_type: str) -> Rejected:
        return Rejected(reason, error_type, "race-state", race_id=self.race_id)

    def _unknown(self, number: int | None) -> Rejected:
        known = sorted(self.cars)
        return self._rejected(f"unknown driver {number} in race {self.race_id} (entry list: {known})",
                              "UNKNOWN_DRIVER")

    def _session(self, s: Session) -> list[RaceEvent]:
        self.applied += 1
        for d in s.drivers:
            if d.number not in self.cars:
                self.cars[d.number] = CarInfo(d)
                self.timing.car(d.number)
                self.live.sync(d.number, 0.0)
            else:
                self.cars[d.number].driver = d
        self.session = s
        self.kind = s.session_type
        self._timing_changed = True
        return []

    def _weather(self, w: Weather) -> list[RaceEvent]:
        self.applied += 1
        self.ts_ms = max(self.ts_ms, w.ts_ms)
        if self.weather is None or w.ts_ms >= self.weather.ts_ms:
            self.weather = w
            self._timing_changed = True
        return []

    def _telemetry(self, t: Telemetry) -> list[RaceEvent] | Rejected:
        car = self.cars.get(t.driver_number)
        if car is None:
            return self._unknown(t.driver_number)
        self.applied += 1
        if t.ts_ms > self.ts_ms:
            self.ts_ms = t.ts_ms
        self._order_changed = True  # positions moved (the map), and the version advanced
        if t.ts_ms < car.telemetry_ms:
            return []  # an older sample than one already applied
        progress = t.lap - 1 + t.progress
        if progress >= car.next_loop:  # maybe a new loop (one sample in ~10 at racing speed)
            car.next_loop = car.loops.sample(
                car.telemetry_ms, car.telemetry_progress, t.ts_ms, progress, self.loops_per_lap)
        car.telemetry_ms = t.ts_ms
        car.telemetry_lap = t.lap
        car.x, car.y, car.speed_kph = t.x, t.y, t.speed_kph
        car.in_pit = t.in_pit
        car.telemetry_progress = progress
        if progress >= self.timing.cars[t.driver_number].laps:
            self.live.update(t.driver_number, progress)
        return []

    def _lap(self, u: DriverUpdate) -> list[RaceEvent] | Rejected:
        lap = u.lap
        n = lap.driver_number
        car = self.cars.get(n)
        if car is None:
            return self._unknown(n)
        timing_car = self.timing.cars[n]
        if lap.lap != timing_car.laps + 1:
            return self._rejected(
                f"lap {lap.lap} of car {n} out of sequence: race has {timing_car.laps} laps for it",
                "OUT_OF_SEQUENCE",
            )
        if (n, lap.lap) in self.deleted_laps and not lap.deleted:
            lap = replace(lap, deleted=True)  # its verdict came first
        if lap.deleted:
            self.deleted_laps.add((n, lap.lap))
        self.applied += 1
        self.ts_ms = max(self.ts_ms, lap.crossing_ms)
        self.timing.add(
            n, lap.lap, lap.crossing_ms, lap.lap_time_ms, lap.pit_in, lap.pit_out,
            lap.track_status.neutralised,
        )
        car.last_lap_ms, car.best_lap_ms = u.last_lap_ms, u.best_lap_ms
        if any(d == n for d, _ in self.deleted_laps):
            car.best_lap_ms = self._best_lap(n)  # the driver step does not know the later verdicts
        car.pit_count, car.compound, car.tyre_age, car.stint = (
            u.pit_count, u.compound, u.tyre_age, u.stint)
        car.in_pit = lap.pit_in
        self._timing_changed = True
        self._charts_changed.add(lap.lap)
        self.live.sync(n, float(lap.lap))

        events: list[RaceEvent | None] = []
        log = self.events
        if u.personal_best:
            events.append(log.personal_best(n, lap.lap, lap.crossing_ms, lap.lap_time_ms))
        if lap.lap_time_ms is not None and not lap.deleted and (
            self.fastest is None
            or (lap.lap_time_ms, lap.crossing_ms) < (self.fastest.lap_time_ms, self.fastest.crossing_ms)
        ):
            self.fastest = FastestLap(n, car.driver.code, lap.lap, lap.lap_time_ms, lap.crossing_ms)
        if u.pit_stop_lap is not None and not self.kind.timed:  # a run ending in the garage is no stop
            events.append(log.pit_stop(n, u.pit_stop_lap, lap.crossing_ms, lap.pit_lane_ms, u.compound))
        if not self.kind.timed:  # overtakes and the distance mean something in a race only
            events.extend(log.overtakes(ot.after_lap(self.timing, n, lap.lap)))
            if timing_car.retired_ms is not None:  # its last laps arrived after the retirement message
                events.extend(log.overtakes(ot.after_retirement(self.timing, n)))
        if not self.kind.timed and lap.lap >= self.session.total_laps and (
            self.chequered_ms is None or lap.crossing_ms < self.chequered_ms
        ):
            self._chequered(lap.crossing_ms)
        self._update_finishers()
        return [e for e in events if e is not None]

    def _control(self, c: Control) -> list[RaceEvent] | Rejected:
        if c.driver_number is not None and c.driver_number not in self.cars:
            return self._unknown(c.driver_number)
        self.applied += 1
        self.ts_ms = max(self.ts_ms, c.ts_ms)
        lap = self.leader_lap()
        log = self.events
        events: list[RaceEvent | None] = []
        if c.kind is ControlKind.TRACK_STATUS and c.track_status is not None:
            if c.ts_ms >= self.track_status_ms:
                self.track_status, self.track_status_ms = c.track_status, c.ts_ms
                self._timing_changed = True
            events.append(log.flag(c.ts_ms, c.track_status, c.lap or lap, c.message))
        elif c.kind is ControlKind.RACE_START:
            events.append(log.race_start(c.ts_ms, c.message))
        elif c.kind is ControlKind.CHEQUERED_FLAG:
            events.append(log.chequered_flag(c.ts_ms, c.lap or lap, c.message))
            if self._ends_session(c.ts_ms) and (self.chequered_ms is None or c.ts_ms < self.chequered_ms):
                self._chequered(c.ts_ms)
                self._update_finishers()
        elif c.kind is ControlKind.RETIREMENT and c.driver_number is not None:
            events.extend(self._retire(c.driver_number, c.ts_ms, c.message, c.lap))
        elif c.kind is ControlKind.PENALTY:
            events.append(log.penalty(c.event_id, c.ts_ms, c.lap or lap, c.driver_number, c.message))
        elif c.kind is ControlKind.MESSAGE:
            events.append(log.race_control(c.event_id, c.ts_ms, c.lap or lap, c.driver_number, c.message))
        elif c.kind is ControlKind.TEAM_RADIO and c.driver_number is not None:
            events.append(log.team_radio(c.event_id, c.ts_ms, c.lap or lap, c.driver_number, c.clip_path))
        elif c.kind in (ControlKind.LAP_DELETED, ControlKind.LAP_REINSTATED) and c.driver_number is not None \
                and c.lap is not None:
            self._lap_verdict(c.driver_number, c.lap, deleted=c.kind is ControlKind.LAP_DELETED)
        elif c.kind in (ControlKind.PART_START, ControlKind.PART_END) and c.part is not None:
            start, end = self.parts.get(c.part, (None, None))
            if c.kind is ControlKind.PART_START:
                start = c.ts_ms if start is None else min(start, c.ts_ms)
            else:
                end = c.ts_ms if end is None else min(end, c.ts_ms)
            self.parts[c.part] = (start, end)
            self._timing_changed = True
            last = c.kind is ControlKind.PART_END and c.part >= 3
            if last and (self.chequered_ms is None or c.ts_ms < self.chequered_ms):
                self._chequered(c.ts_ms)  # the last part's flag ends the session
        elif c.kind is ControlKind.CLOCK and c.remaining_ms is not None and (
                self.clock is None or c.ts_ms >= self.clock[1]):
            self.clock = (c.remaining_ms, c.ts_ms, c.clock_running)
            self._timing_changed = True
        return [e for e in events if e is not None]

    def _ends_session(self, ts_ms: int) -> bool:
        """A chequered flag at ``ts_ms`` ends the session (in qualifying, only the last part's does)."""
        if not self.kind.knockout or not self.parts:
            return True
        part = max((p for p, (start, _end) in self.parts.items() if start is not None and start <= ts_ms), default=0)
        return part >= 3

    def _lap_verdict(self, n: int, lap: int, deleted: bool) -> None:
        """Race control deleted (reinstated) a lap that had gone out: the car's best lap and the
        race's fastest lap are worked out again without (with) it. The FASTEST_LAP event that
        follows from it comes from the settler (:meth:`Settler.verdict`)."""
        if deleted:
            self.deleted_laps.add((n, lap))
        else:
            self.deleted_laps.discard((n, lap))
        self.cars[n].best_lap_ms = self._best_lap(n)
        self.fastest = self._fastest()
        self._timing_changed = True

    def counted_laps(self, n: int) -> list[tuple[int, int, int]]:
        """``(lap time, crossing, lap)`` of every timed lap of car ``n`` that race control let stand."""
        tc = self.timing.cars[n]
        return [(t, tc.crossings[i], i + 1) for i, t in enumerate(tc.lap_times)
                if t is not None and (n, i + 1) not in self.deleted_laps]

    def _best_lap(self, n: int) -> int | None:
        return min((t for t, _c, _lap in self.counted_laps(n)), default=None)

    def _fastest(self) -> FastestLap | None:
        best = min(((t, c, n, lap) for n in self.cars for t, c, lap in self.counted_laps(n)), default=None)
        if best is None:
            return None
        t, c, n, lap = best
        return FastestLap(n, self.cars[n].driver.code, lap, t, c)

    def _retire(self, n: int, ts_ms: int, message: str, on_lap: int | None) -> list[RaceEvent | None]:
        tc = self.timing.cars[n]
        if tc.retired_ms is not None and tc.retired_ms <= ts_ms:
            return []
        if n in self.finished:
            return []  # stopping after the flag is not a retirement
        tc.retired_ms = ts_ms
        tc.retired_on_lap = on_lap
        self.live.retire(n)
        self._timing_changed = True
        events = [self.events.retirement(n, ts_ms, on_lap or tc.laps + 1, message)]
        if not self.kind.timed:
            events.extend(self.events.overtakes(ot.after_retirement(self.timing, n)))
        self._update_finishers()
        return events

    # ------------------------------------------------------------------ the flag
    def _chequered(self, ts_ms: int) -> None:
        """The flag fell at ``ts_ms`` (the leader completing the distance, or race control). The
        CHEQUERED_FLAG event comes from race control's message, whose time is the same whatever
        order the laps arrive in."""
        self.chequered_ms = ts_ms
        self._timing_changed = True

    def _update_finishers(self) -> None:
        """Update who has taken the flag, the hero and the final flag (the live state). The
        FINISHED, LAST_LAP_HERO and CLASSIFICATION *events* wait for the watermark
        (:mod:`dataflows.race.settle`)."""
        if self.chequered_ms is None or self.kind.timed:
            return  # a session ordered by best lap has no finishers, hero or classification at the line
        done = finishers(self.timing, self.chequered_ms)
        for n in done:
            if n not in self.finished:
                self.live.freeze(n, float(done[n].lap))
        self.finished = done
        order = classification_order(self.timing, done)
        positions = {n: i + 1 for i, n in enumerate(order)}
        self.hero = last_lap_hero(self.timing, done, positions)
        if all_finished(self.timing, done) and not self.final:
            self.final = True
            self.live.reset(order)

    # ------------------------------------------------------------------ views
    def leader_lap(self) -> int:
        """The lap the leader is on (the race distance once the flag has fallen)."""
        laps = max((c.laps for c in self.timing.cars.values()), default=0)
        return min(laps + 1, self.session.total_laps) if self.chequered_ms is None else self.session.total_laps

    def phases(self) -> list[Phase]:
        """The parts of a timed session as :mod:`~dataflows.race.qualifying` takes them: the parts
        race control started (a part whose start is not known yet is left out); a session without
        parts (practice, or qualifying read without its status) is one part from the start."""
        if not self.kind.knockout or not self.parts:
            return [Phase(1, -(1 << 62), None)]
        return [Phase(number, start, end) for number, (start, end) in sorted(self.parts.items())
                if start is not None]

    def positions(self) -> dict[int, tuple[float, float]]:
        """Last known x/y of each car (for the track map)."""
        return {n: (c.x, c.y) for n, c in self.cars.items() if c.x is not None and c.y is not None}
