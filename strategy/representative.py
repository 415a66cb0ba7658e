"""The representative lap: one definition of the laps that show a car's pace.

A lap is *representative* when

- it is not lap 1 (a standing start is seconds slower than any flying lap),
- it has a lap time,
- the track was green for the whole lap: ``TrackStatus`` exactly ``"1"`` in a lap table, ``GREEN``
  live (a live lap's status is the most severe status seen during it, so ``GREEN`` live is the
  same laps as ``"1"`` in a table; yellow, safety car, VSC and red laps are out),
- it is neither an in-lap nor an out-lap.

Why this rule and not another: the lap-time model shipped in ``strategy/artifacts`` was trained on
exactly these laps (the ``green`` column of :func:`strategy.features.context_frame`); what it is fed
live (recent, driver, team and field pace in :mod:`dataflows.race.strategist`) must be the same kind
of laps, or its inputs differ from anything it saw in training. A local yellow flag makes drivers
lift in the sector concerned, so a yellow lap is slower by an amount that says nothing about tyres
or fuel: it is out everywhere, stints included. A lap deleted for track limits is *not* excluded:
the car still drove it and it counts in race time, and the lap tables the model learnt from do not
mark deletions, so the model saw such laps too.

Everything that needs "the laps that show pace" uses this module: the lap features and training
(:mod:`strategy.features`), stint pace and degradation (:mod:`dataflows.race.stints`, which further
drops outliers within a stint: a statistic of the stint, not a property of a lap), the strategy
calls (:mod:`dataflows.race.strategist`) and the history API (:func:`sql_condition`, the same rule
as a PostgreSQL condition on the ``laps`` table).

>>> is_representative(5, 91.2, "GREEN", pit_in=False, pit_out=False)
True
>>> is_representative(5, 91.2, "12", pit_in=False, pit_out=False)   # a yellow during the lap
False
>>> is_representative(1, 99.0, "1", pit_in=False, pit_out=False)
False
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

#: the whole lap under green: the feed code in lap tables, the status name live
GREEN_STATUSES = ("1", "GREEN")
#: laps from this one on can be representative (lap 1 is a standing start)
FIRST_LAP = 2


def is_green_status(status: object) -> bool:
    """The track was green for the whole lap (``"1"`` or ``"GREEN"``; a ``TrackStatus`` works too)."""
    return status is not None and str(status).strip().upper() in GREEN_STATUSES


def is_representative(lap: int, lap_time: float | None, status: object, pit_in: bool, pit_out: bool) -> bool:
    """The rule (see the module doc). ``lap_time`` in any unit; ``None`` or NaN when unknown."""
    return (
        lap >= FIRST_LAP
        and lap_time is not None
        and not math.isnan(lap_time)
        and is_green_status(status)
        and not pit_in
        and not pit_out
    )


def polars_expr(lap: str = "LapNumber", lap_time: str = "LapTime", status: str = "TrackStatus",
                pit_in_time: str = "PitInTime", pit_out_time: str = "PitOutTime") -> pl.Expr:
    """The rule on a lap table (:func:`strategy.data.load_laps`): pit flags are the presence of a
    pit-in / pit-out time, the status a feed code string."""
    import polars as pl

    return (
        (pl.col(lap) >= FIRST_LAP)
        & pl.col(lap_time).is_not_null()
        & pl.col(lap_time).is_not_nan()
        & pl.col(status).str.strip_chars().str.to_uppercase().is_in(list(GREEN_STATUSES))
        & pl.col(pit_in_time).is_null()
        & pl.col(pit_out_time).is_null()
    )


def sql_condition(alias: str = "") -> str:
    """The rule as a PostgreSQL condition on the history store's ``laps`` table (``alias``: the
    table's alias in the query, if any).

    >>> sql_condition("l")[:48]
    '(l.lap >= 2 AND l.lap_time_ms IS NOT NULL AND up'
    """
    p = f"{alias}." if alias else ""
    statuses = ", ".join(f"'{s}'" for s in GREEN_STATUSES)
    return (f"({p}lap >= {FIRST_LAP} AND {p}lap_time_ms IS NOT NULL AND upper(trim({p}track_status)) IN "
            f"({statuses}) AND NOT {p}pit_in AND NOT {p}pit_out)")
