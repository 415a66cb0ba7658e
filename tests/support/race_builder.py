"""Hand-built race scenarios for the race-logic unit tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dataflows.race.driver import DriverState, DriverUpdate
from dataflows.race.processor import RaceProcessor
from schemas.model import Control, ControlKind, Driver, Lap, RaceEvent, Session, Telemetry, TrackStatus

CODES = {1: "AAA", 2: "BBB", 3: "CCC", 4: "DDD", 5: "EEE"}


class Race:
    """Feed laps, telemetry and control messages; collect events and snapshots."""

    def __init__(self, cars: int = 3, laps: int = 3, grid: list[int] | None = None,
                 track_m: int = 5000) -> None:
        drivers = [Driver(n, CODES[n], f"Driver {n}", f"Team {n}") for n in range(1, cars + 1)]
        self.session = Session("s", "r", "Test GP", "Testring", laps, track_m,
                               datetime(2024, 3, 2, 15, tzinfo=UTC), drivers,
                               grid=grid if grid is not None else list(range(1, cars + 1)))
        self.proc = RaceProcessor("r")
        self.drivers = {d.number: DriverState() for d in drivers}
        self.outputs: list[Any] = []
        self.now = 0.0
        self.feed(self.session)

    @property
    def state(self) -> Any:
        return self.proc.state

    def feed(self, record: Any) -> list[Any]:
        self.now += 1.0
        out = self.proc.on_batch([(record, None)], self.now)
        self.outputs.extend(out)
        return out

    def lap(self, n: int, lap: int, crossing_ms: int, lap_time_ms: int | None = None,
            **kw: Any) -> list[Any]:
        rec = Lap(f"r:lap:{n}:{lap}", "r", n, lap, crossing_ms,
                  lap_time_ms if lap_time_ms is not None else 90_000, **kw)
        update = self.drivers[n].update(rec)
        assert isinstance(update, DriverUpdate), update
        return self.feed(update)

    def tel(self, n: int, ts_ms: int, lap: int, progress: float) -> list[Any]:
        return self.feed(Telemetry(f"r:tel:{n}:{ts_ms}", "r", n, ts_ms, lap, progress, 0.0, 0.0,
                                   250.0, 11000, 7, 100.0, False, False))

    def control(self, ts_ms: int, kind: ControlKind, status: TrackStatus | None = None,
                driver: int | None = None, lap: int | None = None) -> list[Any]:
        return self.feed(Control(f"r:rc:{ts_ms}:{kind}", "r", ts_ms, kind, "", status, driver, lap))

    def events(self, type_: str | None = None) -> list[RaceEvent]:
        return [o for o in self.outputs if isinstance(o, RaceEvent) and (type_ is None or o.type == type_)]

    def overtakes(self) -> set[tuple[int, int, int, str, bool]]:
        return {(e.lap, e.driver_number, e.other_driver_number, str(e.overtake_kind), e.under_safety_car)
                for e in self.events("OVERTAKE")}  # type: ignore[misc]
