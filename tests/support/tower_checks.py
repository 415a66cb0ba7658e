"""Consistency of a published timing tower: what a viewer checks by reading it top to bottom."""

from __future__ import annotations

from schemas.model import CarStatus, Leaderboard

#: cars still racing (a car in the pit lane is still in the race)
_RUNNING = (CarStatus.RUNNING, CarStatus.PIT)


def inconsistencies(board: Leaderboard) -> list[str]:
    """Where the tower contradicts itself, for consecutive running cars on the lead lap: a gap
    smaller than the row above, or an interval that is not the difference of the two gaps.

    The leader's gap counts as 0. Rows whose gap is unknown (``None`` on the lead lap) are left
    out, as are lapped cars (gaps in laps) and cars that finished or retired.
    """
    out: list[str] = []
    above: tuple[int, int] | None = None  # (position, gap) of the row above, on the lead lap
    for row in board.rows:
        if row.status not in _RUNNING and row.position > 1:
            above = None
            continue
        if row.position == 1:
            above = (1, 0) if row.status in _RUNNING or row.status == CarStatus.FINISHED else None
            continue
        if row.gap_laps or row.gap_ms is None:
            above = None
            continue
        if above is not None and above[0] == row.position - 1:
            if row.gap_ms < above[1]:
                out.append(f"P{row.position} gap {row.gap_ms} < P{above[0]} gap {above[1]}")
            if row.interval_laps or row.interval_ms != row.gap_ms - above[1]:
                out.append(f"P{row.position} interval {row.interval_ms} (+{row.interval_laps} laps) "
                           f"!= gap {row.gap_ms} - P{above[0]} gap {above[1]}")
        above = (row.position, row.gap_ms)
    return out
