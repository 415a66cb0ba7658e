"""The timing line: crossing times per car and lap, and what follows from them alone.

Everything here is a pure function of crossing times, never of the order in which records were
processed, so two workers reading partitions in a different interleaving agree.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(slots=True)
class CarTiming:
    number: int
    grid_position: int
    #: crossings[k-1] = session ms at which lap k was completed
    crossings: list[int] = field(default_factory=list)
    lap_times: list[int | None] = field(default_factory=list)
    pit_flags: list[tuple[bool, bool]] = field(default_factory=list)  # (pit_in, pit_out)
    neutralised: list[bool] = field(default_factory=list)  # SC / VSC / red during that lap
    retired_ms: int | None = None
    #: the lap the car retired on, when race control said so (its laps completed + 1)
    retired_on_lap: int | None = None

    @property
    def laps(self) -> int:
        return len(self.crossings)

    def crossing(self, lap: int) -> int | None:
        """Crossing time of ``lap``; lap 0 is the grid (its value is the grid slot)."""
        if lap == 0:
            return self.grid_position
        return self.crossings[lap - 1] if 0 < lap <= len(self.crossings) else None

    def is_pit_lap(self, lap: int) -> bool:
        if not 0 < lap <= len(self.pit_flags):
            return False
        pit_in, pit_out = self.pit_flags[lap - 1]
        return pit_in or pit_out

    def last_crossing(self) -> int:
        return self.crossings[-1] if self.crossings else -1


class TimingLine:
    """Crossings of every car, indexed by lap, with positions (gaps: :mod:`dataflows.race.gaps`).

    >>> t = TimingLine({1: 1, 2: 2})
    >>> t.add(2, 1, 90_100); t.add(1, 1, 90_000)
    >>> t.position_at(2, 1), t.order()
    (2, [1, 2])
    """

    def __init__(self, grid: dict[int, int], grid_known: bool = True) -> None:
        #: False when the starting grid is unknown: lap-1 positions are then not comparable
        self.grid_known = grid_known
        self.cars: dict[int, CarTiming] = {n: CarTiming(n, pos) for n, pos in grid.items()}
        #: lap → sorted list of (crossing_ms, car)
        self.by_lap: dict[int, list[tuple[int, int]]] = {}

    def car(self, number: int) -> CarTiming:
        car = self.cars.get(number)
        if car is None:
            car = self.cars[number] = CarTiming(number, len(self.cars) + 1)
        return car

    def add(
        self,
        number: int,
        lap: int,
        crossing_ms: int,
        lap_time_ms: int | None = None,
        pit_in: bool = False,
        pit_out: bool = False,
        neutralised: bool = False,
    ) -> None:
        car = self.car(number)
        if lap != car.laps + 1:
            raise ValueError(f"car {number}: lap {lap} after {car.laps}")
        car.crossings.append(crossing_ms)
        car.lap_times.append(lap_time_ms)
        car.pit_flags.append((pit_in, pit_out))
        car.neutralised.append(neutralised)
        bisect.insort(self.by_lap.setdefault(lap, []), (crossing_ms, number))

    # ------------------------------------------------------------------ positions
    def position_at(self, number: int, lap: int) -> int | None:
        """1 + cars that completed ``lap`` strictly before this car; the grid slot for lap 0."""
        car = self.cars[number]
        if lap == 0:
            return car.grid_position
        t = car.crossing(lap)
        if t is None:
            return None
        return 1 + bisect.bisect_left(self.by_lap.get(lap, []), (t, -1))

    def order_key(self, number: int) -> tuple[int, int, int]:
        """Sort key of the order at the timing line: running first, laps desc, crossing asc."""
        car = self.cars[number]
        return (1 if car.retired_ms is not None else 0, -car.laps, car.last_crossing())

    def order(self) -> list[int]:
        return sorted(self.cars, key=lambda n: (*self.order_key(n), self.cars[n].grid_position))
