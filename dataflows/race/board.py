"""The live timing tower (the leaderboard) and the classification, rendered from the race state.

Rows are in the live running order (:mod:`~dataflows.race.live_order`); gap and interval come from
the passage times at the virtual timing loops (:mod:`~dataflows.race.gaps`), so order, gap and
interval agree between crossings. The tower at the end of each lap, for the history store, is
:mod:`~dataflows.race.towers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataflows.race.finish import classification_order, status_text
from dataflows.race.gaps import Passages, tower_gaps
from schemas.model import CarStatus, ClassifiedCar, Hero, Leaderboard, LeaderboardRow

if TYPE_CHECKING:
    from dataflows.race.state import RaceState


def positions_gained(state: RaceState, n: int, positions: dict[int, int]) -> int | None:
    """Places a finisher gained on its last lap: its position at the line a lap before the flag,
    less its position in ``positions``; None for a car that has not finished."""
    f = state.finished.get(n)
    if f is None:
        return None
    before = state.timing.position_at(n, f.lap - 1)
    return None if before is None else before - positions[n]


def passages(state: RaceState, number: int) -> Passages | None:
    """Where car ``number`` stands at the timing loops, for :func:`~dataflows.race.gaps.tower_gaps`:
    None for a retired car (no figures); a finisher counts up to its flag line."""
    tc, info = state.timing.cars[number], state.cars[number]
    per_lap = state.loops_per_lap
    f = state.finished.get(number)
    if f is not None:
        return Passages(per_lap, f.lap, tc.crossings, info.loops, info.telemetry_ms, upto=f.lap * per_lap)
    if tc.retired_ms is not None:
        return None
    return Passages(per_lap, tc.laps, tc.crossings, info.loops, info.telemetry_ms)


def leaderboard(state: RaceState, reason: str = "timing") -> Leaderboard:
    """The live tower, with the race's flag, fastest lap and hero."""
    timing, finished = state.timing, state.finished
    timing_pos = {n: i + 1 for i, n in enumerate(timing.order())}
    final_positions = {n: i + 1 for i, n in enumerate(classification_order(timing, finished))}
    rows = []
    live = state.live.order
    figures = tower_gaps([passages(state, n) for n in live])
    for i, n in enumerate(live):
        info, tc = state.cars[n], timing.cars[n]
        gap_ms, gap_laps, int_ms, int_laps = figures[i]
        progress = state.live.progress.get(n, float(tc.laps))
        if n in finished:
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
            timing_position=timing_pos[n], gap_ms=gap_ms, gap_laps=gap_laps, interval_ms=int_ms,
            interval_laps=int_laps, last_lap_ms=info.last_lap_ms, best_lap_ms=info.best_lap_ms,
            compound=info.compound, tyre_age=info.tyre_age, pit_count=info.pit_count,
            positions_gained_last_lap=positions_gained(state, n, final_positions) if n in finished else None,
        ))
    hero = None
    if state.hero is not None:
        h = state.hero
        hero = Hero(h.number, state.cars[h.number].driver.code, h.lap, h.lap_time_ms, h.positions_gained, h.final)
    return Leaderboard(
        race_id=state.race_id, version=state.version, ts_ms=state.ts_ms, lap=state.leader_lap(),
        total_laps=state.session.total_laps, track_status=state.track_status,
        finished=state.chequered_ms is not None, final=state.final, rows=rows,
        fastest_lap=state.fastest, hero=hero, reason=reason,
    )


def classification(state: RaceState) -> list[ClassifiedCar]:
    """The classification as it stands: finishers at the flag, then running and retired cars."""
    done, timing = state.finished, state.timing
    order = classification_order(timing, done)
    if not order:
        return []
    winner = order[0]
    winner_laps = done[winner].lap if winner in done else timing.cars[winner].laps
    rows = []
    for i, n in enumerate(order):
        tc = timing.cars[n]
        f = done.get(n)
        laps = f.lap if f else tc.laps
        retired = f is None and tc.retired_ms is not None
        t = f.crossing_ms if f else (tc.last_crossing() if tc.laps else None)
        wt = timing.cars[winner].crossing(laps) if laps else None
        gap = t - wt if (t is not None and wt is not None and laps == winner_laps and i) else None
        rows.append(ClassifiedCar(
            position=i + 1, driver_number=n, code=state.cars[n].driver.code, laps=laps,
            status=status_text(laps, winner_laps, retired), time_ms=t, gap_ms=gap,
            gap_laps=max(0, winner_laps - laps)))
    return rows
