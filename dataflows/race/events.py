"""Race events and their text, in one place.

:class:`EventLog` builds every :class:`RaceEvent` the race state emits, with its message, and
gives each out once: an event's id is derived from the facts of the event (``race:key``), so an
event decided twice (a replay, a late partition) is not emitted twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from dataflows.race.finish import HeroResult
from dataflows.race.overtakes import Overtake
from schemas.model import ClassifiedCar, EventType, RaceEvent, TrackStatus

if TYPE_CHECKING:
    from schemas.model import Driver


class _HasDriver(Protocol):
    @property
    def driver(self) -> Driver: ...


_OVERTAKE_HOW = {"ON_TRACK": "on track", "PIT": "through the pits", "RETIREMENT": "as he slows"}

_FLAG_TEXT = {
    TrackStatus.GREEN: "Green flag: track clear",
    TrackStatus.YELLOW: "Yellow flag",
    TrackStatus.SC: "Safety car deployed",
    TrackStatus.VSC: "Virtual safety car deployed",
    TrackStatus.VSC_ENDING: "Virtual safety car ending",
    TrackStatus.RED: "Red flag: session suspended",
}


def lap_time_text(ms: int | None) -> str:
    """Lap time as m:ss.mmm.

    >>> lap_time_text(94570)
    '1:34.570'
    """
    if ms is None:
        return "-"
    minutes, rest = divmod(ms, 60_000)
    return f"{minutes}:{rest // 1000:02d}.{rest % 1000:03d}"


def flag_text(status: TrackStatus) -> str:
    """
    >>> flag_text(TrackStatus.SC)
    'Safety car deployed'
    """
    return _FLAG_TEXT[status]


class EventLog:
    """The events of one race: each built with its text, each given out once.

    Every method returns the event, or None when an event with the same id went out before.
    ``cars`` maps car numbers to what the tower knows of them (their driver gives the codes).
    """

    __slots__ = ("cars", "emitted", "race_id")

    def __init__(self, race_id: str, cars: Mapping[int, _HasDriver]) -> None:
        self.race_id = race_id
        self.cars = cars
        #: ids of the events given out so far
        self.emitted: set[str] = set()

    def __len__(self) -> int:
        return len(self.emitted)

    def _code(self, number: int) -> str:
        return self.cars[number].driver.code

    def event(self, key: str, type_: EventType, ts_ms: int, lap: int, driver: int | None = None,
              other: int | None = None, **fields: object) -> RaceEvent | None:
        event_id = f"{self.race_id}:{key}"
        if event_id in self.emitted:
            return None
        self.emitted.add(event_id)
        return RaceEvent(
            event_id=event_id, race_id=self.race_id, type=type_, ts_ms=ts_ms, lap=lap,
            driver_number=driver, code=None if driver is None else self._code(driver),
            other_driver_number=other,
            other_code=None if other is None else self._code(other),
            **fields,  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------------ at the timing line
    def personal_best(self, n: int, lap: int, ts_ms: int, lap_time_ms: int | None) -> RaceEvent | None:
        return self.event(f"pb:{n}:{lap}", EventType.PERSONAL_BEST, ts_ms, lap, n, lap_time_ms=lap_time_ms,
                          message=f"{self._code(n)} personal best {lap_time_text(lap_time_ms)}")

    def pit_stop(self, n: int, in_lap: int, ts_ms: int, pit_lane_ms: int | None,
                 compound: str | None) -> RaceEvent | None:
        return self.event(
            f"pit:{n}:{in_lap}", EventType.PIT_STOP, ts_ms, in_lap, n, pit_lane_ms=pit_lane_ms,
            message=f"{self._code(n)} pitted at the end of lap {in_lap}"
            + (f", now on {compound}" if compound else ""))

    def overtakes(self, found: list[Overtake]) -> list[RaceEvent | None]:
        out = []
        for o in found:
            a, b = self._code(o.driver), self._code(o.passed)
            out.append(self.event(
                f"overtake:{o.lap}:{o.driver}:{o.passed}", EventType.OVERTAKE, o.ts_ms, o.lap,
                o.driver, o.passed, overtake_kind=o.kind, under_safety_car=o.under_safety_car,
                message=f"{a} passes {b} {_OVERTAKE_HOW[o.kind]} on lap {o.lap}"
                + (" (under neutralisation)" if o.under_safety_car else "")))
        return out

    # ------------------------------------------------------------------ race control
    def flag(self, ts_ms: int, status: TrackStatus, lap: int, message: str) -> RaceEvent | None:
        return self.event(f"flag:{ts_ms}:{status}", EventType.FLAG, ts_ms, lap, track_status=status,
                          message=message or flag_text(status))

    def race_start(self, ts_ms: int, message: str) -> RaceEvent | None:
        return self.event("start", EventType.RACE_START, ts_ms, 0, message=message or "Lights out and away we go")

    def chequered_flag(self, ts_ms: int, lap: int, message: str) -> RaceEvent | None:
        return self.event("chequered", EventType.CHEQUERED_FLAG, ts_ms, lap, message=message or "Chequered flag")

    def retirement(self, n: int, ts_ms: int, lap: int, message: str) -> RaceEvent | None:
        return self.event(f"retired:{n}", EventType.RETIREMENT, ts_ms, lap, n,
                          message=message or f"{self._code(n)} retires on lap {lap}")

    def penalty(self, event_id: str, ts_ms: int, lap: int, n: int | None, message: str) -> RaceEvent | None:
        return self.event(f"penalty:{event_id}", EventType.PENALTY, ts_ms, lap, n, message=message)

    def race_control(self, event_id: str, ts_ms: int, lap: int, n: int | None, message: str) -> RaceEvent | None:
        """A race-control message as sent (one that is no flag, penalty or verdict)."""
        return self.event(f"rc:{event_id}", EventType.RACE_CONTROL, ts_ms, lap, n, message=message)

    def team_radio(self, event_id: str, ts_ms: int, lap: int, n: int, clip_path: str | None) -> RaceEvent | None:
        return self.event(f"radio:{event_id}", EventType.TEAM_RADIO, ts_ms, lap, n, clip_path=clip_path,
                          message=f"Team radio: {self._code(n)}")

    # ------------------------------------------------------------------ settled (see settle.py)
    def fastest_lap(self, n: int, lap: int, ts_ms: int, lap_time_ms: int) -> RaceEvent | None:
        return self.event(f"fastest:{n}:{lap}", EventType.FASTEST_LAP, ts_ms, lap, n, lap_time_ms=lap_time_ms,
                          message=f"{self._code(n)} fastest lap {lap_time_text(lap_time_ms)}")

    def finished(self, n: int, lap: int, ts_ms: int, position: int, gained: int | None) -> RaceEvent | None:
        return self.event(f"finished:{n}", EventType.FINISHED, ts_ms, lap, n, position=position,
                          positions_gained=gained, message=f"{self._code(n)} takes the flag in P{position}")

    def hero(self, hero: HeroResult, ts_ms: int, provisional: bool) -> RaceEvent | None:
        return self.event(
            f"hero:{hero.number}:{'provisional' if provisional else 'final'}", EventType.LAST_LAP_HERO,
            ts_ms, hero.lap, hero.number, lap_time_ms=hero.lap_time_ms,
            positions_gained=hero.positions_gained, provisional=provisional,
            message=f"{self._code(hero.number)} is the {'provisional ' if provisional else ''}last-lap hero: "
                    f"{lap_time_text(hero.lap_time_ms)} on the final lap")

    def classification(self, ts_ms: int, lap: int, rows: list[ClassifiedCar]) -> RaceEvent | None:
        return self.event("classification", EventType.CLASSIFICATION, ts_ms, lap, classification=rows,
                          message="Final classification")
