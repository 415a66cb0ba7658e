"""Fuel correction: one definition of how much a lap time owes to the fuel on board.

A car starts with :data:`START_FUEL_KG` and burns it evenly over the race distance; each kilogram
costs :data:`FUEL_S_PER_KG` per lap. So a car gets :func:`fuel_s_per_lap` faster every lap
(3.3 s / race laps: 0.06 s on a 55-lap race, 0.042 s on a 78-lap Monaco), and a lap starting with
fuel for the rest of the race on board carries :func:`fuel_s` of it. A *fuel-corrected* lap time
(:func:`fuel_corrected`) is the lap time with that cost taken off: what the lap would have been
with an empty tank, so that what is left of the trend over a stint is the tyres.

Why these numbers: they are what the shipped models were fitted with (the ``fuel_s`` feature of the
lap-time model and the fuel-corrected degradation in ``strategy/artifacts/degradation.json``), so
live stint degradation (:mod:`dataflows.race.stints`), the strategy simulation
(:mod:`strategy.field`) and the models agree on what "fuel-corrected" means. A rate that depends on
the race length (rather than a fixed 0.06 s per lap) is right for short and long races alike.

Three spellings of the same formula, for scalars, numpy arrays and polars frames; a unit test checks
that they agree.

>>> round(fuel_s_per_lap(55), 3), round(fuel_s(1, 55), 3), round(fuel_s(55, 55), 3)
(0.06, 3.3, 0.06)
>>> round(fuel_corrected(95.0, 11, 55), 3)   # 45 laps of fuel on board
92.3
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

#: fuel at the start of a race (kg): the maximum allowed, burnt evenly over the distance
START_FUEL_KG = 110.0
#: lap time cost of each kilogram on board (s per kg per lap)
FUEL_S_PER_KG = 0.03


def fuel_s_per_lap(total_laps: int) -> float:
    """Lap time gained per lap from burning fuel: 0.03 s/kg x 110 kg / race distance (laps)."""
    return FUEL_S_PER_KG * START_FUEL_KG / max(int(total_laps), 1)


def fuel_s(lap: int, total_laps: int) -> float:
    """Time cost (s) of the fuel on board when lap ``lap`` starts."""
    return fuel_s_per_lap(total_laps) * max(total_laps - lap + 1, 0)


def fuel_corrected(lap_time_s: float, lap: int, total_laps: int) -> float:
    """Lap ``lap``'s time (s) without the cost of its fuel: what it would be with an empty tank."""
    return lap_time_s - fuel_s(lap, total_laps)


def fuel_s_array(lap: np.ndarray, total_laps: np.ndarray) -> np.ndarray:
    """:func:`fuel_s` for arrays (float64; ``total_laps`` at least 1)."""
    import numpy as np

    total = np.maximum(np.asarray(total_laps, dtype=np.float64), 1.0)
    return FUEL_S_PER_KG * START_FUEL_KG / total * np.maximum(total - np.asarray(lap, dtype=np.float64) + 1.0, 0.0)


def fuel_s_expr(lap: str = "lap", total_laps: str = "total_laps") -> pl.Expr:
    """:func:`fuel_s` as a polars expression on columns ``lap`` and ``total_laps``."""
    import polars as pl

    return (FUEL_S_PER_KG * START_FUEL_KG / pl.col(total_laps)) * (pl.col(total_laps) - pl.col(lap) + 1).clip(0)
