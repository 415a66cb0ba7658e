"""Race-level state (keyed ``race_id``): order, gaps, fastest lap, overtakes, flag, hero.

``RaceState.apply(record)`` takes one input (a :class:`Session`, a :class:`Control`, a
:class:`Telemetry` sample, or a :class:`DriverUpdate` from the per-driver step) and returns the
race events it causes, or a :class:`Rejection`. ``RaceState.leaderboard()`` renders the timing
tower. Every event id is derived from the facts of the event, and every decision about laps is a
function of crossing times, so the same input gives the same events whatever the interleaving of
partitions.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from dataflows.race import overtakes as ot
from dataflows.race.driver import DriverUpdate, Rejection
from dataflows.race.finish import (
    Finisher,
    HeroResult,
    all_finished,
    classification_order,
    classification_order_at,
    finishers,
    last_lap_hero,
    status_text,
)
from dataflows.race.gaps import LoopTimes, Passages, loops_per_lap, tower_gaps
from dataflows.race.live_order import LiveOrder
from dataflows.race.timing import TimingLine
from schemas.model import (
    CarStatus,
    ClassifiedCar,
    Control,
    ControlKind,
    Driver,
    EventType,
    FastestLap,
    Hero,
    Leaderboard,
    LeaderboardRow,
    RaceEvent,
    Session,
    Telemetry,
    TrackStatus,
)

#: default hysteresis of the live order, metres (two cars side by side are < 5 m apart)
HYSTERESIS_M = 15.0
_FALLBACK_TRACK_M = 5000
#: wall-clock seconds the strategy calls for a lap wait for a car missing from its end once the
#: leader is two laps further on (see :meth:`RaceState.strategy_laps`)
STRAGGLER_GRACE_S = 15.0


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
    """All race-level state of one race."""

    def __init__(self, session: Session) -> None:
        self.race_id = session.race_id
        self.session = session
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
        self.fastest: FastestLap | None = None
        #: valid laps not yet confirmed as (not) a new fastest lap: (crossing, time, car, lap)
        self._fl_pending: list[tuple[int, int, int, int]] = []
        self._fl_best: tuple[int, int] | None = None  # (time, crossing) among confirmed laps
        self._announced: set[int] = set()  # finishers whose FINISHED event went out
        self._hero_announced: int | None = None
        self._classified = False
        self.finished: dict[int, Finisher] = {}
        self.hero: HeroResult | None = None
        self.final = False
        #: input records applied (session, laps, telemetry, control); see :func:`race_version`
        self.applied = 0
        self.ts_ms = 0
        self.emitted: set[str] = set()
        #: the last lap handed out by :meth:`strategy_laps`
        self._strategy_lap = 0
        #: (lap, cars that had completed it, wall-clock s) while a lap waits for missing cars
        self._strategy_waiting: tuple[int, int, float] | None = None
        #: cars the calls stopped waiting for, with their lap count then
        self._silent: dict[int, int] = {}
        #: laps whose order at the timing line changed since last taken (see ``take_lap_charts``)
        self.lap_charts_dirty: set[int] = set()
        #: set when something at the timing line changed since the last snapshot
        self.timing_dirty = True
        #: set when only telemetry (running order, car positions) changed since the last snapshot
        self.order_dirty = False

    @property
    def version(self) -> int:
        return race_version(self.ts_ms, self.applied)

    def size(self) -> int:
        """How much this state holds: cars, laps at the timing line and events emitted."""
        return len(self.cars) + sum(c.laps for c in self.timing.cars.values()) + len(self.emitted)

    # ------------------------------------------------------------------ input
    def apply(self, record: object) -> list[RaceEvent] | Rejection:
        if isinstance(record, Telemetry):
            return self._telemetry(record)
        if isinstance(record, DriverUpdate):
            return self._lap(record)
        if isinstance(record, Control):
            return self._control(record)
        if isinstance(record, Session):
            return self._session(record)
        return Rejection(f"unsupported record {type(record).__name__}", "INVALID")

    def _unknown(self, number: int | None) -> Rejection:
        known = sorted(self.cars)
        return Rejection(
            f"unknown driver {number} in race {self.race_id} (entry list: {known})", "UNKNOWN_DRIVER"
        )

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
        self.timing_dirty = True
        return []

    def _telemetry(self, t: Telemetry) -> list[RaceEvent] | Rejection:
        car = self.cars.get(t.driver_number)
        if car is None:
            return self._unknown(t.driver_number)
        self.applied += 1
        if t.ts_ms > self.ts_ms:
            self.ts_ms = t.ts_ms
        self.order_dirty = True  # positions moved (the map), and the version advanced
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

    def _lap(self, u: DriverUpdate) -> list[RaceEvent] | Rejection:
        lap = u.lap
        n = lap.driver_number
        car = self.cars.get(n)
        if car is None:
            return self._unknown(n)
        timing_car = self.timing.cars[n]
        if lap.lap != timing_car.laps + 1:
            return Rejection(
                f"lap {lap.lap} of car {n} out of sequence: race has {timing_car.laps} laps for it",
                "OUT_OF_SEQUENCE",
            )
        self.applied += 1
        self.ts_ms = max(self.ts_ms, lap.crossing_ms)
        self.timing.add(
            n, lap.lap, lap.crossing_ms, lap.lap_time_ms, lap.pit_in, lap.pit_out,
            lap.track_status.neutralised,
        )
        car.last_lap_ms, car.best_lap_ms = u.last_lap_ms, u.best_lap_ms
        car.pit_count, car.compound, car.tyre_age, car.stint = (
            u.pit_count, u.compound, u.tyre_age, u.stint)
        car.in_pit = lap.pit_in
        self.timing_dirty = True
        self.lap_charts_dirty.add(lap.lap)
        self.live.sync(n, float(lap.lap))

        events: list[RaceEvent | None] = []
        code = car.driver.code
        if u.personal_best:
            events.append(self._event(
                f"pb:{n}:{lap.lap}", EventType.PERSONAL_BEST, lap.crossing_ms, lap.lap, n,
                lap_time_ms=lap.lap_time_ms, message=f"{code} personal best {_fmt(lap.lap_time_ms)}"))
        if lap.lap_time_ms is not None and not lap.deleted and (
            self.fastest is None
            or (lap.lap_time_ms, lap.crossing_ms) < (self.fastest.lap_time_ms, self.fastest.crossing_ms)
        ):
            self.fastest = FastestLap(n, code, lap.lap, lap.lap_time_ms, lap.crossing_ms)
        if lap.lap_time_ms is not None and not lap.deleted:
            bisect.insort(self._fl_pending, (lap.crossing_ms, lap.lap_time_ms, n, lap.lap))
        if u.pit_stop_lap is not None:
            events.append(self._event(
                f"pit:{n}:{u.pit_stop_lap}", EventType.PIT_STOP, lap.crossing_ms, u.pit_stop_lap, n,
                pit_lane_ms=lap.pit_lane_ms,
                message=f"{code} pitted at the end of lap {u.pit_stop_lap}"
                + (f", now on {u.compound}" if u.compound else "")))
        events.extend(self._overtake_events(ot.after_lap(self.timing, n, lap.lap)))
        if timing_car.retired_ms is not None:  # its last laps arrived after the retirement message
            events.extend(self._overtake_events(ot.after_retirement(self.timing, n)))
        if lap.lap >= self.session.total_laps and (
            self.chequered_ms is None or lap.crossing_ms < self.chequered_ms
        ):
            self._chequered(lap.crossing_ms)
        events.extend(self._finishes())
        return [e for e in events if e is not None]

    def _control(self, c: Control) -> list[RaceEvent] | Rejection:
        if c.driver_number is not None and c.driver_number not in self.cars:
            return self._unknown(c.driver_number)
        self.applied += 1
        self.ts_ms = max(self.ts_ms, c.ts_ms)
        lap = self._leader_lap()
        events: list[RaceEvent | None] = []
        if c.kind is ControlKind.TRACK_STATUS and c.track_status is not None:
            if c.ts_ms >= self.track_status_ms:
                self.track_status, self.track_status_ms = c.track_status, c.ts_ms
                self.timing_dirty = True
            events.append(self._event(
                f"flag:{c.ts_ms}:{c.track_status}", EventType.FLAG, c.ts_ms, c.lap or lap,
                track_status=c.track_status, message=c.message or _flag_text(c.track_status)))
        elif c.kind is ControlKind.RACE_START:
            events.append(self._event("start", EventType.RACE_START, c.ts_ms, 0,
                                      message=c.message or "Lights out and away we go"))
        elif c.kind is ControlKind.CHEQUERED_FLAG:
            events.append(self._event("chequered", EventType.CHEQUERED_FLAG, c.ts_ms, c.lap or lap,
                                      message=c.message or "Chequered flag"))
            if self.chequered_ms is None or c.ts_ms < self.chequered_ms:
                self._chequered(c.ts_ms)
                events.extend(self._finishes())
        elif c.kind is ControlKind.RETIREMENT and c.driver_number is not None:
            events.extend(self._retire(c.driver_number, c.ts_ms, c.message, c.lap))
        elif c.kind is ControlKind.PENALTY:
            events.append(self._event(
                f"penalty:{c.event_id}", EventType.PENALTY, c.ts_ms, c.lap or lap, c.driver_number,
                message=c.message))
        return [e for e in events if e is not None]

    def _retire(self, n: int, ts_ms: int, message: str, on_lap: int | None) -> list[RaceEvent | None]:
        tc = self.timing.cars[n]
        if tc.retired_ms is not None and tc.retired_ms <= ts_ms:
            return []
        if n in self.finished:
            return []  # stopping after the flag is not a retirement
        tc.retired_ms = ts_ms
        tc.retired_on_lap = on_lap
        self.live.retire(n)
        self.timing_dirty = True
        code = self.cars[n].driver.code
        events: list[RaceEvent | None] = [self._event(
            f"retired:{n}", EventType.RETIREMENT, ts_ms, on_lap or tc.laps + 1, n,
            message=message or f"{code} retires on lap {on_lap or tc.laps + 1}")]
        events.extend(self._overtake_events(ot.after_retirement(self.timing, n)))
        events.extend(self._finishes())
        return events

    # ------------------------------------------------------------------ derived events
    def _event(self, key: str, type_: EventType, ts_ms: int, lap: int, driver: int | None = None,
               other: int | None = None, **fields: object) -> RaceEvent | None:
        event_id = f"{self.race_id}:{key}"
        if event_id in self.emitted:
            return None
        self.emitted.add(event_id)
        return RaceEvent(
            event_id=event_id, race_id=self.race_id, type=type_, ts_ms=ts_ms, lap=lap,
            driver_number=driver, code=None if driver is None else self.cars[driver].driver.code,
            other_driver_number=other,
            other_code=None if other is None else self.cars[other].driver.code,
            **fields,  # type: ignore[arg-type]
        )

    def _overtake_events(self, found: list[ot.Overtake]) -> list[RaceEvent | None]:
        out = []
        for o in found:
            a, b = self.cars[o.driver].driver.code, self.cars[o.passed].driver.code
            how = {"ON_TRACK": "on track", "PIT": "through the pits", "RETIREMENT": "as he slows"}[o.kind]
            out.append(self._event(
                f"overtake:{o.lap}:{o.driver}:{o.passed}", EventType.OVERTAKE, o.ts_ms, o.lap,
                o.driver, o.passed, overtake_kind=o.kind, under_safety_car=o.under_safety_car,
                message=f"{a} passes {b} {how} on lap {o.lap}"
                + (" (under neutralisation)" if o.under_safety_car else "")))
        return out

    def _chequered(self, ts_ms: int) -> None:
        """The flag fell at ``ts_ms`` (the leader completing the distance, or race control). The
        CHEQUERED_FLAG event comes from race control's message, whose time is the same whatever
        order the laps arrive in."""
        self.chequered_ms = ts_ms
        self.timing_dirty = True

    def _finishes(self) -> list[RaceEvent | None]:
        """Update who has taken the flag, the hero and the final flag (the live state). The
        FINISHED, LAST_LAP_HERO and CLASSIFICATION *events* are decided in :meth:`settle`."""
        if self.chequered_ms is None:
            return []
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
        return []

    def _settle_finishers(self, watermark: float) -> list[RaceEvent]:
        """Finishers whose flag crossing is behind the watermark, in crossing order: each with
        its position as of that instant, and the (provisional) hero as of that instant."""
        out: list[RaceEvent | None] = []
        for f in sorted(self.finished.values(), key=lambda x: x.crossing_ms):
            if f.number in self._announced or f.crossing_ms >= watermark:
                continue
            self._announced.add(f.number)
            t = f.crossing_ms
            order = classification_order_at(self.timing, self.finished, t)
            pos = {n: i + 1 for i, n in enumerate(order)}
            code = self.cars[f.number].driver.code
            out.append(self._event(
                f"finished:{f.number}", EventType.FINISHED, t, f.lap, f.number, position=pos[f.number],
                positions_gained=self._gained(f.number, pos), message=f"{code} takes the flag in P{pos[f.number]}"))
            so_far = {n: x for n, x in self.finished.items() if x.crossing_ms <= t}
            hero = last_lap_hero(self.timing, so_far, pos)
            last_one = self.final and len(self._announced) == len(self.finished)
            if hero is not None and hero.number != self._hero_announced and not last_one:
                self._hero_announced = hero.number
                out.append(self._hero_event(hero, provisional=True))
        if self.final and watermark == float("inf") and not self._classified:
            self._classified = True
            if self.hero is not None:
                out.append(self._hero_event(self.hero, provisional=False))
            out.append(self._event(
                "classification", EventType.CLASSIFICATION, max(f.crossing_ms for f in self.finished.values()),
                self.session.total_laps, classification=self.classification(), message="Final classification"))
        return [e for e in out if e is not None]

    def _hero_event(self, hero: HeroResult, provisional: bool) -> RaceEvent | None:
        code = self.cars[hero.number].driver.code
        return self._event(
            f"hero:{hero.number}:{'provisional' if provisional else 'final'}", EventType.LAST_LAP_HERO,
            self.finished[hero.number].crossing_ms, hero.lap, hero.number, lap_time_ms=hero.lap_time_ms,
            positions_gained=hero.positions_gained, provisional=provisional,
            message=f"{code} is the {'provisional ' if provisional else ''}last-lap hero: "
                    f"{_fmt(hero.lap_time_ms)} on the final lap")

    def _gained(self, n: int, positions: dict[int, int]) -> int | None:
        f = self.finished.get(n)
        if f is None:
            return None
        before = self.timing.position_at(n, f.lap - 1)
        return None if before is None else before - positions[n]

    def settle(self) -> list[RaceEvent]:
        """FASTEST_LAP events for laps now known to beat every lap completed before them.

        The leaderboard's fastest lap changes as soon as a lap arrives. The *event* waits until
        no earlier lap can still arrive: every car has been seen past that instant, at the line
        or, with all its laps in, in telemetry (which at live rate is a fraction of a second).
        So the events are the same whatever order partitions are read in.
        """
        if not self._fl_pending and not self.finished:
            return []
        watermark = self._watermark()
        out: list[RaceEvent] = []
        while self._fl_pending and self._fl_pending[0][0] < watermark:
            crossing, time_ms, n, lap = self._fl_pending.pop(0)
            if self._fl_best is not None and (time_ms, crossing) >= self._fl_best:
                continue
            self._fl_best = (time_ms, crossing)
            code = self.cars[n].driver.code
            e = self._event(f"fastest:{n}:{lap}", EventType.FASTEST_LAP, crossing, lap, n,
                            lap_time_ms=time_ms, message=f"{code} fastest lap {_fmt(time_ms)}")
            if e is not None:
                out.append(e)
        if self.finished:
            out.extend(self._settle_finishers(watermark))
        return out

    def strategy_laps(self, now_s: float) -> list[int]:
        """Laps newly complete for strategy calls, oldest first, each returned once.

        Lap N is complete when the leader has finished it (before the chequered flag, N below the
        race distance) and every car still running has crossed the line at its end or is known to
        be a lap down (the leader's lap N+1 crossing is behind the watermark, see :meth:`settle`).
        So the state the calls see is the state at the end of lap N, whatever order the partitions
        were read in.

        A car that stops without a retirement message would hold the calls back for ever, and from
        the records alone it looks just like a car whose partition is read late (in a fast replay
        one partition can run laps ahead of another). So the calls go ahead without the missing
        cars only when both hold: the leader has completed lap N+2, and nothing has completed lap N
        for :data:`STRAGGLER_GRACE_S` seconds of wall-clock time (``now_s``); a late partition
        catches up within that, a stopped car does not. Such a car is not waited for again (nor
        holds back the lapped-car test) until it crosses the line once more.
        :meth:`strategy_deadline_s` says when to look again if nothing else arrives.
        """
        out: list[int] = []
        total = self.session.total_laps
        while True:
            n = self._strategy_lap + 1
            line = self.timing.by_lap.get(n)
            if n >= total or not line:
                break
            if self.chequered_ms is not None and line[0][0] >= self.chequered_ms:
                break
            if not self._lap_complete(n):
                if not self.timing.by_lap.get(n + 2):
                    self._strategy_waiting = None
                    break
                crossed = len(line)
                if self._strategy_waiting is None or self._strategy_waiting[:2] != (n, crossed):
                    self._strategy_waiting = (n, crossed, now_s)  # (re)start the grace period
                if now_s - self._strategy_waiting[2] < STRAGGLER_GRACE_S:
                    break
                # given up on: not waited for again until they cross the line once more
                self._silent.update((c, self.timing.cars[c].laps) for c in self._missing(n))
            self._strategy_waiting = None
            out.append(n)
            self._strategy_lap = n
        return out

    def strategy_deadline_s(self) -> float | None:
        """When :meth:`strategy_laps` gives up waiting for a car missing from the end of a lap."""
        waiting = self._strategy_waiting
        return None if waiting is None else waiting[2] + STRAGGLER_GRACE_S

    def gone_silent(self, number: int) -> bool:
        """True for a car the strategy calls stopped waiting for (see :meth:`strategy_laps`) that has
        not crossed the line since."""
        tc = self.timing.cars.get(number)
        return tc is not None and self._silent.get(number) == tc.laps

    def _missing(self, n: int) -> list[int]:
        """Running cars that have not crossed the line at the end of lap ``n`` (nor been given up on)."""
        return [number for number, tc in self.timing.cars.items()
                if tc.laps < n and tc.retired_ms is None and number not in self.finished
                and not self.gone_silent(number)]

    def _lap_complete(self, n: int) -> bool:
        following = self.timing.by_lap.get(n + 1)
        watermark: float | None = None
        for _number in self._missing(n):
            if following is None:
                return False
            if watermark is None:
                watermark = self._watermark(self._silent)
            if following[0][0] >= watermark:
                return False  # not yet known whether this car is a lap down
        return True

    def take_lap_charts(self) -> dict[int, list[int]]:
        """Order at the timing line of each lap that changed: the cars that completed it, by
        crossing time (the lap chart)."""
        charts = {lap: [n for _t, n in self.timing.by_lap.get(lap, [])] for lap in sorted(self.lap_charts_dirty)}
        self.lap_charts_dirty.clear()
        return charts

    def watermark(self) -> float:
        """Every lap completed before this instant (session ms) has arrived, as far as the records
        read so far tell (see :meth:`settle`); cars the strategy calls gave up on are left out."""
        return self._watermark(self._silent)

    def _watermark(self, silent: dict[int, int] | None = None) -> float:
        """Every lap completed before this instant has arrived (cars in ``silent`` whose lap count
        has not moved since are left out)."""
        bound = float("inf")
        for n, tc in self.timing.cars.items():
            if n in self.finished or (silent and silent.get(n) == tc.laps):
                continue
            if tc.retired_ms is not None and (tc.retired_on_lap is None or tc.laps >= tc.retired_on_lap - 1):
                continue
            car = self.cars.get(n)
            # all of this car's laps that ended at or before `seen - 1` have arrived
            seen = float(tc.last_crossing() + 1)
            if car is not None and car.telemetry_lap - 1 <= tc.laps:
                seen = max(seen, car.telemetry_ms + 1)
            bound = min(bound, seen)
        return bound

    # ------------------------------------------------------------------ views
    def _leader_lap(self) -> int:
        laps = max((c.laps for c in self.timing.cars.values()), default=0)
        return min(laps + 1, self.session.total_laps) if self.chequered_ms is None else self.session.total_laps

    def classification(self) -> list[ClassifiedCar]:
        done = self.finished
        order = classification_order(self.timing, done)
        if not order:
            return []
        winner = order[0]
        winner_laps = done[winner].lap if winner in done else self.timing.cars[winner].laps
        rows = []
        for i, n in enumerate(order):
            tc = self.timing.cars[n]
            f = done.get(n)
            laps = f.lap if f else tc.laps
            retired = f is None and tc.retired_ms is not None
            t = f.crossing_ms if f else (tc.last_crossing() if tc.laps else None)
            wt = self.timing.cars[winner].crossing(laps) if laps else None
            gap = t - wt if (t is not None and wt is not None and laps == winner_laps and i) else None
            rows.append(ClassifiedCar(
                position=i + 1, driver_number=n, code=self.cars[n].driver.code, laps=laps,
                status=status_text(laps, winner_laps, retired), time_ms=t, gap_ms=gap,
                gap_laps=max(0, winner_laps - laps)))
        return rows

    def passages(self, number: int) -> Passages | None:
        """Where car ``number`` stands at the timing loops, for :func:`~dataflows.race.gaps.tower_gaps`:
        None for a retired car (no figures); a finisher counts up to its flag line."""
        tc, info = self.timing.cars[number], self.cars[number]
        f = self.finished.get(number)
        if f is not None:
            return Passages(self.loops_per_lap, f.lap, tc.crossings, info.loops, info.telemetry_ms,
                            upto=f.lap * self.loops_per_lap)
        if tc.retired_ms is not None:
            return None
        return Passages(self.loops_per_lap, tc.laps, tc.crossings, info.loops, info.telemetry_ms)

    def leaderboard(self, reason: str = "timing") -> Leaderboard:
        timing_order = self.timing.order()
        timing_pos = {n: i + 1 for i, n in enumerate(timing_order)}
        final_positions = {n: i + 1 for i, n in enumerate(classification_order(self.timing, self.finished))}
        rows = []
        live = self.live.order
        figures = tower_gaps([self.passages(n) for n in live])
        for i, n in enumerate(live):
            info, tc = self.cars[n], self.timing.cars[n]
            tp = timing_pos[n]
            gap_ms, gap_laps, int_ms, int_laps = figures[i]
            progress = self.live.progress.get(n, float(tc.laps))
            if n in self.finished:
                status = CarStatus.FINISHED
            elif tc.retired_ms is not None:
                status = CarStatus.RETIRED
                # where it stopped: from its own (ordered) samples, whatever else arrived when
                progress = max(float(tc.laps), info.telemetry_progress)
            elif info.in_pit:
                status = CarStatus.PIT
            else:
                status = CarStatus.RUNNING
            rows.append(LeaderboardRow(
                position=i + 1, driver_number=n, code=info.driver.code, team=info.driver.team,
                team_colour=info.driver.team_colour, laps=tc.laps,
                progress=round(progress, 4), status=status,
                timing_position=tp, gap_ms=gap_ms, gap_laps=gap_laps, interval_ms=int_ms,
                interval_laps=int_laps, last_lap_ms=info.last_lap_ms, best_lap_ms=info.best_lap_ms,
                compound=info.compound, tyre_age=info.tyre_age, pit_count=info.pit_count,
                positions_gained_last_lap=self._gained(n, final_positions) if n in self.finished else None,
            ))
        hero = None
        if self.hero is not None:
            h = self.hero
            hero = Hero(h.number, self.cars[h.number].driver.code, h.lap, h.lap_time_ms,
                        h.positions_gained, h.final)
        return Leaderboard(
            race_id=self.race_id, version=self.version, ts_ms=self.ts_ms, lap=self._leader_lap(),
            total_laps=self.session.total_laps, track_status=self.track_status,
            finished=self.chequered_ms is not None, final=self.final, rows=rows,
            fastest_lap=self.fastest, hero=hero, reason=reason,
        )

    def positions(self) -> dict[int, tuple[float, float]]:
        """Last known x/y of each car (for the track map)."""
        return {n: (c.x, c.y) for n, c in self.cars.items() if c.x is not None and c.y is not None}


def _fmt(ms: int | None) -> str:
    """Lap time as m:ss.mmm.

    >>> _fmt(94570)
    '1:34.570'
    """
    if ms is None:
        return "-"
    minutes, rest = divmod(ms, 60_000)
    return f"{minutes}:{rest // 1000:02d}.{rest % 1000:03d}"


def _flag_text(status: TrackStatus) -> str:
    return {
        TrackStatus.GREEN: "Green flag: track clear",
        TrackStatus.YELLOW: "Yellow flag",
        TrackStatus.SC: "Safety car deployed",
        TrackStatus.VSC: "Virtual safety car deployed",
        TrackStatus.VSC_ENDING: "Virtual safety car ending",
        TrackStatus.RED: "Red flag: session suspended",
    }[status]
