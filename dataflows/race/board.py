"""The live timing tower (the leaderboard) and the classification, rendered from the race state.

Rows are in the live running order (:mod:`~dataflows.race.live_order`); gap and interval come from
the passage times at the virtual timing loops (:mod:`~dataflows.race.gaps`), so order, gap and
interval agree between crossings. The tower at the end of each lap, for the history store, is
:mod:`~dataflows.race.towers`.

A session ordered by best lap (qualifying, sprint qualifying, practice: ``SessionKind.timed``) is
shown as the timing screens show it: the standings of the current part by
:mod:`~dataflows.race.qualifying` (deleted laps left out), gap to the best time and interval to the
car above, the cars knocked out in earlier parts below with the part that knocked them out, and
the session clock; no hero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataflows.race import qualifying
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


def standings(state: RaceState) -> list[qualifying.Standing]:
    """A timed session's order now (:func:`dataflows.race.qualifying.classification`)."""
    laps = [qualifying.QualiLap(n, i + 1, tc.crossings[i], t, (n, i + 1) in state.deleted_laps)
            for n, tc in state.timing.cars.items() for i, t in enumerate(tc.lap_times)]
    drivers = sorted(state.cars)
    advance = None if state.kind.knockout else (len(drivers), len(drivers))
    return qualifying.classification(qualifying.standings(laps, state.phases(), drivers, advance))


def _status(state: RaceState, n: int) -> CarStatus:
    """A car's state on the live tower: took the flag, retired, in the pit lane, running."""
    if n in state.finished:
        return CarStatus.FINISHED
    if state.timing.cars[n].retired_ms is not None:
        return CarStatus.RETIRED
    return CarStatus.PIT if state.cars[n].in_pit else CarStatus.RUNNING


def _timed_rows(state: RaceState) -> list[LeaderboardRow]:
    rows = []
    table = standings(state)
    for i, st in enumerate(table):
        n = st.driver
        info, tc = state.cars[n], state.timing.cars[n]
        rows.append(LeaderboardRow(
            position=i + 1, driver_number=n, code=info.driver.code, team=info.driver.team,
            team_colour=info.driver.team_colour, laps=tc.laps, progress=float(tc.laps),
            status=_status(state, n), timing_position=i + 1, gap_ms=st.gap_ms if i else None,
            interval_ms=st.interval_ms, last_lap_ms=info.last_lap_ms, best_lap_ms=st.best_ms,
            compound=info.compound, tyre_age=info.tyre_age, pit_count=info.pit_count,
            knocked_out=st.phase if st.knocked_out else None, best_lap_number=st.best_lap))
    return rows


def leaderboard(state: RaceState, reason: str = "timing") -> Leaderboard:
    """The live tower, with the session's flag, fastest lap, hero and clock."""
    if state.kind.timed:
        return _board(state, _timed_rows(state), None, reason)
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
        status = _status(state, n)
        if status is CarStatus.RETIRED:
            # where it stopped: from its own (ordered) samples, whatever else arrived when
            progress = max(float(tc.laps), info.telemetry_progress)
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
    return _board(state, rows, hero, reason)


def _cut(state: RaceState, part: int) -> int:
    """How many cars of qualifying part ``part`` go on (0: no part, or the last)."""
    if not part or part >= 3:
        return 0
    return qualifying.advancing(len(state.cars))[part - 1]


def _board(state: RaceState, rows: list[LeaderboardRow], hero: Hero | None, reason: str) -> Leaderboard:
    clock = state.clock
    part = max(state.parts, default=0) if state.kind.knockout else 0
    return Leaderboard(
        race_id=state.race_id, version=state.version, ts_ms=state.ts_ms, lap=state.leader_lap(),
        total_laps=state.session.total_laps, track_status=state.track_status,
        finished=state.chequered_ms is not None, final=state.final, rows=rows,
        fastest_lap=state.fastest, hero=hero, reason=reason, session_type=state.kind,
        part=part, cut=_cut(state, part),
        clock_remaining_ms=clock[0] if clock else None, clock_ts_ms=clock[1] if clock else None,
        clock_running=clock[2] if clock else False,
        weather=None if state.weather is None else state.weather.now(),
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
