"""The pit stop: one definition of what counts as a stop.

A car's lap ``n`` and its next lap ``n + 1`` make a **pit stop** when lap ``n`` is an in-lap (it
ended in the pit lane) and lap ``n + 1`` is an out-lap (it started there), with the in-lap **not**
under a red flag. Not stops:

- a red-flag stay in the pit lane: under a red flag every car is called into the pit lane and
  waits there; the race resumes without it having been a strategic stop (and Ergast records such
  stays as 16-18 minute "stops");
- a pit-lane start: an out-lap on lap 1 with no in-lap before it;
- an in-lap with no out-lap after it (the car retired in the pits, or took the flag there).

The stint number goes up with every stop, so tyre stints and stop counts agree. Users: the
per-driver state of the race flow (:mod:`dataflows.race.driver`: ``pit_count`` on the tower,
``PIT_STOP`` events), the strategist (a car on an in-lap that starts a stop is pitting), the
simulator's ground truth and the benchmarks (through the flow's own logic).

Incremental (lap by lap, as the flow sees them) with :func:`pending_in_lap` and
:func:`stop_completed`, or over a whole lap sequence with :func:`stop_laps`.

>>> stop_laps([(1, False, True, "GREEN"), (2, False, False, "GREEN"), (3, True, False, "GREEN"),
...            (4, False, True, "GREEN"), (5, True, False, "RED"), (6, False, True, "RED")])
[3]
"""

from __future__ import annotations

from collections.abc import Iterable


def is_red(status: object) -> bool:
    """A red flag: ``RED`` live (``TrackStatus.RED``), or a feed code string containing ``5``."""
    s = str(status).strip().upper() if status is not None else ""
    return s == "RED" or (s.isdigit() and "5" in s)


def starts_stop(pit_in: bool, status: object) -> bool:
    """True when an in-lap (``pit_in``) under ``status`` can start a stop (not a red-flag stay)."""
    return pit_in and not is_red(status)


def pending_in_lap(lap: int, pit_in: bool, status: object) -> int | None:
    """After lap ``lap``: the in-lap waiting for its out-lap (``lap`` itself), else None."""
    return lap if starts_stop(pit_in, status) else None


def stop_completed(pending: int | None, lap: int, pit_out: bool) -> int | None:
    """The in-lap of the stop that lap ``lap`` completes (an out-lap right after a pending
    in-lap), else None."""
    return pending if pit_out and pending is not None and pending == lap - 1 else None


def stop_laps(laps: Iterable[tuple[int, bool, bool, object]]) -> list[int]:
    """The in-laps of every stop in one car's laps ``(lap, pit_in, pit_out, track status)``, in
    lap order."""
    stops: list[int] = []
    pending: int | None = None
    for lap, pit_in, pit_out, status in laps:
        done = stop_completed(pending, lap, pit_out)
        if done is not None:
            stops.append(done)
        pending = pending_in_lap(lap, pit_in, status)
    return stops
