"""Ground truth of a simulated race, computed from the simulator's own timing-line crossings.

This is deliberately independent code: it shares nothing with the dataflows, so a test can hold
the live pipeline's results against it. Every definition follows ``DESIGN.md`` (race metrics):

* **classification**: running/finished cars by laps completed (desc), then last crossing (asc);
  retired cars after them, by laps (desc), then last crossing (asc) (grid order for cars that
  never crossed the line). Status ``Finished`` on the winner's lap, ``+1 Lap`` / ``+N Laps``
  when lapped, ``Retired``.
* **fastest lap**: lowest lap time, deleted laps excluded; ties go to the earlier crossing.
* **last-lap hero**: among the cars that took the flag, the fastest time on their own final lap
  (ties: earlier crossing); ``positions_gained`` = P(previous lap) - final classified position,
  where P(lap k) of car X = 1 + the number of cars that completed lap k strictly before X
  (P(lap 0) is the grid position).
* **overtakes**: timing-line swaps. The grid is observation 0. For lap n, A overtook B when B
  was ahead of A at lap n-1 and A completed lap n before B did. Kind ``PIT`` when either car's
  lap n or lap n-1 has ``pit_in``/``pit_out``, else ``ON_TRACK``; when B never completed lap n
  because it retired, and A completed lap n before B's retirement, kind ``RETIREMENT``.
  ``under_safety_car`` when A's or B's lap n track status is SC, VSC, VSC_ENDING or RED.
* **pit stops**: an in-lap followed by an out-lap (a retiring car's drive into the pits is not
  a stop); ``lap`` is the in-lap.

>>> log = RaceLog("r", 1, 1, [
...     CarLog(1, "AAA", 1, [Crossing(1, 90_000, 90_000)], None),
...     CarLog(2, "BBB", 2, [Crossing(1, 89_000, 89_000)], None),
... ], [], 89_000)
>>> t = compute_truth(log)
>>> [(c["driver_number"], c["status"]) for c in t["classification"]]
[(2, 'Finished'), (1, 'Finished')]
>>> t["overtakes"][0]["driver_number"], t["overtakes"][0]["kind"]
(2, 'ON_TRACK')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strategy.pitstops import stop_laps

NEUTRALISED = frozenset({"SC", "VSC", "VSC_ENDING", "RED"})
STATUS_FINISHED = "Finished"
STATUS_RETIRED = "Retired"


@dataclass(frozen=True, slots=True)
class Crossing:
    """One completed lap of one car, as the simulator timed it."""

    lap: int
    crossing_ms: int
    lap_time_ms: int | None
    pit_in: bool = False
    pit_out: bool = False
    track_status: str = "GREEN"
    deleted: bool = False


@dataclass(slots=True)
class CarLog:
    """Everything the truth needs about one car (crossings in lap order)."""

    number: int
    code: str
    grid_position: int
    crossings: list[Crossing]
    retired_ms: int | None
    """Session time of the car's retirement; ``None`` when it was still running at the end."""


@dataclass(frozen=True, slots=True)
class StatusPeriod:
    """A stretch of one non-green track status, as race control announced it."""

    status: str
    start_ms: int
    end_ms: int | None
    start_lap: int
    end_lap: int | None


@dataclass(slots=True)
class RaceLog:
    race_id: str
    seed: int
    laps: int
    cars: list[CarLog]
    status_periods: list[StatusPeriod]
    chequered_ms: int | None


def compute_truth(log: RaceLog) -> dict[str, Any]:
    """The JSON-able ground truth of a finished race."""
    classification = _classification(log)
    return {
        "race_id": log.race_id,
        "seed": log.seed,
        "laps": log.laps,
        "classification": classification,
        "fastest_lap": _fastest_lap(log),
        "last_lap_hero": _last_lap_hero(log, classification),
        "overtakes": _overtakes(log),
        "pit_stops": _pit_stops(log),
        "retirements": sorted(
            (
                {"driver_number": c.number, "code": c.code, "laps": len(c.crossings)}
                for c in log.cars
                if c.retired_ms is not None
            ),
            key=lambda r: (r["laps"], r["driver_number"]),
        ),
        "track_status_periods": [
            {
                "status": p.status,
                "start_ms": p.start_ms,
                "end_ms": p.end_ms,
                "start_lap": p.start_lap,
                "end_lap": p.end_lap,
            }
            for p in sorted(log.status_periods, key=lambda p: p.start_ms)
        ],
        "chequered_ms": log.chequered_ms,
    }


def _last_crossing(car: CarLog) -> int | None:
    return car.crossings[-1].crossing_ms if car.crossings else None


def _classification(log: RaceLog) -> list[dict[str, Any]]:
    def key(car: CarLog) -> tuple[int, int, int]:
        last = _last_crossing(car)
        # no crossing at all: behind every car that crossed, in grid order
        return (-len(car.crossings), 0 if last is not None else 1, last or car.grid_position)

    running = sorted((c for c in log.cars if c.retired_ms is None), key=key)
    retired = sorted((c for c in log.cars if c.retired_ms is not None), key=key)
    winner_laps = len(running[0].crossings) if running else 0
    out: list[dict[str, Any]] = []
    for pos, car in enumerate(running + retired, start=1):
        laps = len(car.crossings)
        if car.retired_ms is not None:
            status = STATUS_RETIRED
        elif laps >= winner_laps:
            status = STATUS_FINISHED
        else:
            down = winner_laps - laps
            status = f"+{down} Lap" if down == 1 else f"+{down} Laps"
        out.append(
            {"position": pos, "driver_number": car.number, "code": car.code, "laps": laps,
             "status": status}
        )
    return out


def _fastest_lap(log: RaceLog) -> dict[str, Any] | None:
    best: tuple[int, int, CarLog, Crossing] | None = None
    for car in log.cars:
        for x in car.crossings:
            if x.deleted or x.lap_time_ms is None:
                continue
            cand = (x.lap_time_ms, x.crossing_ms, car, x)
            if best is None or cand[:2] < best[:2]:
                best = cand
    if best is None:
        return None
    _, _, car, x = best
    return {"driver_number": car.number, "code": car.code, "lap": x.lap,
            "lap_time_ms": x.lap_time_ms}


def _position_at(log: RaceLog, car: CarLog, lap: int) -> int:
    """P(lap k) of ``car``: 1 + cars that completed lap k strictly before it (grid for k=0)."""
    if lap <= 0:
        return car.grid_position
    mine = car.crossings[lap - 1].crossing_ms
    ahead = 0
    for other in log.cars:
        if other is car or len(other.crossings) < lap:
            continue
        if other.crossings[lap - 1].crossing_ms < mine:
            ahead += 1
    return 1 + ahead


def _last_lap_hero(log: RaceLog, classification: list[dict[str, Any]]) -> dict[str, Any] | None:
    if log.chequered_ms is None:
        return None
    final_position = {row["driver_number"]: row["position"] for row in classification}
    best: tuple[int, int, CarLog, Crossing] | None = None
    for car in log.cars:
        if car.retired_ms is not None or not car.crossings:
            continue
        last = car.crossings[-1]
        if last.crossing_ms < log.chequered_ms or last.lap_time_ms is None:
            continue  # did not take the flag
        cand = (last.lap_time_ms, last.crossing_ms, car, last)
        if best is None or cand[:2] < best[:2]:
            best = cand
    if best is None:
        return None
    _, _, car, last = best
    gained = _position_at(log, car, last.lap - 1) - final_position[car.number]
    return {"driver_number": car.number, "code": car.code, "lap": last.lap,
            "lap_time_ms": last.lap_time_ms, "positions_gained": gained}


def _pit_flag(car: CarLog, lap: int) -> bool:
    if 1 <= lap <= len(car.crossings):
        x = car.crossings[lap - 1]
        return x.pit_in or x.pit_out
    return False


def _overtakes(log: RaceLog) -> list[dict[str, Any]]:
    found: list[tuple[tuple[int, int, int], dict[str, Any]]] = []
    max_lap = max((len(c.crossings) for c in log.cars), default=0)
    for n in range(1, max_lap + 1):
        # order at observation n-1: (ordering key, car) for the cars that completed lap n-1
        if n == 1:
            before = sorted(((c.grid_position, c) for c in log.cars), key=lambda t: t[0])
        else:
            before = sorted(
                ((c.crossings[n - 2].crossing_ms, c) for c in log.cars if len(c.crossings) >= n - 1),
                key=lambda t: (t[0], t[1].grid_position),
            )
        for ib, (b_key, b) in enumerate(before):
            for a_key, a in before[ib + 1 :]:
                if a_key == b_key or len(a.crossings) < n:
                    continue  # B must have been strictly ahead
                a_ms = a.crossings[n - 1].crossing_ms
                if len(b.crossings) >= n:
                    if a_ms >= b.crossings[n - 1].crossing_ms:
                        continue
                    pit = any(_pit_flag(c, k) for c in (a, b) for k in (n, n - 1))
                    kind = "PIT" if pit else "ON_TRACK"
                    statuses: tuple[str, ...] = (
                        a.crossings[n - 1].track_status, b.crossings[n - 1].track_status)
                elif b.retired_ms is not None and a_ms < b.retired_ms:
                    kind = "RETIREMENT"
                    statuses = (a.crossings[n - 1].track_status,)
                else:
                    continue
                found.append((
                    (n, a_ms, ib),
                    {
                        "lap": n,
                        "driver_number": a.number,
                        "code": a.code,
                        "passed_driver_number": b.number,
                        "passed_code": b.code,
                        "kind": kind,
                        "under_safety_car": any(s in NEUTRALISED for s in statuses),
                    },
                ))
    found.sort(key=lambda t: t[0])
    return [o for _, o in found]


def _pit_stops(log: RaceLog) -> list[dict[str, Any]]:
    """Every stop as :mod:`strategy.pitstops` defines it (a red-flag stay in the pit lane is none)."""
    stops = [
        {"driver_number": car.number, "code": car.code, "lap": lap}
        for car in log.cars
        for lap in stop_laps((x.lap, x.pit_in, x.pit_out, x.track_status) for x in car.crossings)
    ]
    return sorted(stops, key=lambda s: (s["lap"], s["driver_number"]))
