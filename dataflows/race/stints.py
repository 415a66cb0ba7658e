"""Stint features of one car (DESIGN.md: a stint is consecutive laps on one set of tyres).

Per stint: compound, start lap, length, tyre age at the start, median pace, fuel-corrected
degradation (seconds per lap of tyre age) with its standard error, and consistency. Pace and
degradation use only *representative* laps (:mod:`strategy.representative`: not lap 1, not an
in-lap or out-lap, the whole lap under green, a lap time; the laps the lap-time model was trained
on), less the stint's outliers (a spin, a slow lap in traffic: more than ``max(1.5 s, 4 * MAD)``
from the stint's median).

Fuel correction (:mod:`strategy.fuel`): a car gets lighter every lap, which hides tyre wear. Each
used lap time has the cost of the fuel on board taken off (3.3 s over the race distance, the same
correction the shipped degradation model was fitted with), and the degradation is the
least-squares slope of the corrected time against tyre age. The race distance is the session's
``total_laps``, which the race state knows: the tracker lives there, one per car.

A function of the car's own lap sequence and the race distance, so a replay yields the same stints.

>>> t = StintTracker(total_laps=55)
>>> for lap, ms in enumerate([99_000, 95_300, 95_400, 95_450, 95_600], start=1):
...     out = t.update("r", 16, lap, ms, compound="SOFT", tyre_age=lap, stint=1)
>>> s = out[-1]
>>> (s.stint, s.length, s.laps_used, s.median_pace_ms, round(s.degradation_ms_per_lap))
(1, 5, 4, 95425, 155)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from schemas.model import Stint, TrackStatus
from strategy.fuel import fuel_s
from strategy.representative import is_representative

#: a used lap further than this from the stint median is an outlier (ms); or 4 * MAD if larger
OUTLIER_MIN_MS = 1500.0


@dataclass(slots=True)
class _Open:
    stint: int
    compound: str | None
    start_lap: int
    tyre_age_start: int
    end_lap: int
    #: representative laps: (lap, tyre age, lap time ms)
    used: list[tuple[int, int, int]] = field(default_factory=list)


@dataclass(slots=True)
class StintTracker:
    """The current stint of one car, updated lap by lap; ``total_laps``: the race distance."""

    total_laps: int
    current: _Open | None = None
    closed: int = 0

    def update(self, race_id: str, driver: int, lap: int, lap_time_ms: int | None, *,
               compound: str | None, tyre_age: int | None, stint: int, pit_in: bool = False,
               pit_out: bool = False, track_status: TrackStatus | str = TrackStatus.GREEN) -> list[Stint]:
        """Apply the car's next lap; returns the closed previous stint (if this lap started a
        new one) and the current stint's features after this lap."""
        out: list[Stint] = []
        cur = self.current
        if cur is not None and stint != cur.stint:
            out.append(self._features(race_id, driver, cur, self.total_laps, open_=False))
            self.closed += 1
            cur = None
        if cur is None:
            start_age = max(0, (tyre_age or 1) - 1)
            cur = self.current = _Open(stint, compound, lap, start_age, lap)
        cur.end_lap = lap
        if compound is not None:
            cur.compound = compound
        age = tyre_age if tyre_age is not None else cur.tyre_age_start + (lap - cur.start_lap + 1)
        if is_representative(lap, lap_time_ms, track_status, pit_in, pit_out):
            assert lap_time_ms is not None
            cur.used.append((lap, age, lap_time_ms))
        out.append(self._features(race_id, driver, cur, self.total_laps, open_=True))
        return out

    @staticmethod
    def _features(race_id: str, driver: int, cur: _Open, total_laps: int, open_: bool) -> Stint:
        used = _without_outliers(cur.used)
        s = Stint(race_id=race_id, driver_number=driver, stint=cur.stint, compound=cur.compound,
                  start_lap=cur.start_lap, end_lap=cur.end_lap, length=cur.end_lap - cur.start_lap + 1,
                  tyre_age_start=cur.tyre_age_start, laps_used=len(used), open=open_)
        if used:
            s.median_pace_ms = round(_median([t for _l, _a, t in used]))
        fit = degradation_fit(used, total_laps)
        if fit is not None:
            slope, stderr, resid_sd = fit
            s.degradation_ms_per_lap = round(slope, 2)
            s.degradation_stderr = None if stderr is None else round(stderr, 2)
            s.consistency_ms = None if resid_sd is None else round(resid_sd, 1)
        return s


def degradation_fit(used: list[tuple[int, int, int]], total_laps: int
                    ) -> tuple[float, float | None, float | None] | None:
    """Least-squares slope (ms per lap of tyre age) of fuel-corrected lap times (``(lap, tyre
    age, ms)``, race distance ``total_laps``) against tyre age, its standard error and the
    residual standard deviation; None below two distinct ages.

    >>> degradation_fit([(2, 2, 95_000), (3, 3, 95_040), (4, 4, 95_080)], total_laps=33)
    (140.0, 0.0, 0.0)
    """
    n = len(used)
    if n < 2:
        return None
    xs = [float(a) for _l, a, _t in used]
    ys = [t - 1000.0 * fuel_s(lap, total_laps) for lap, _a, t in used]
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0.0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    if n < 3:
        return slope, None, None
    ssr = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))
    var = ssr / (n - 2)
    return slope, math.sqrt(var / sxx), math.sqrt(var)


def _without_outliers(used: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    if len(used) < 4:
        return used
    times = [t for _l, _a, t in used]
    med = _median(times)
    mad = _median([abs(t - med) for t in times])
    limit = max(OUTLIER_MIN_MS, 4.0 * 1.4826 * mad)
    return [u for u in used if abs(u[2] - med) <= limit]


def _median(values: list[int] | list[float]) -> float:
    s = sorted(values)
    n = len(s)
    mid = n // 2
    return float(s[mid]) if n % 2 else (s[mid - 1] + s[mid]) / 2.0
