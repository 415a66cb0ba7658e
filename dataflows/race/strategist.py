"""Strategy calls at the end of every lap, inside the race-level state.

The schedule says when a lap is complete (:mod:`dataflows.race.schedule`); the strategist keeps
each car's lap history (tyres, stints, green laps) and turns the state at the end of that lap
into a :class:`~strategy.field.Situation`: running order and gaps at the line, tyres, stops,
compounds used, recent pace and live degradation. The Monte Carlo (:mod:`strategy.calls`) then
gives one call per running car, published on ``f1.strategy.recommendations``.

Everything a call sees is the state at the end of lap N (each car's laps up to N), so a replay or
another worker count gives the same calls; the simulation's seed comes from the race id and the lap.
When the models or the simulation fail, the rule-based calls (:mod:`strategy.rules`) answer and say so.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field, replace
from statistics import median
from typing import TYPE_CHECKING, Any

from dataflows.race.driver import DriverUpdate
from schemas.model import Recommendation, Stint
from strategy.pitstops import starts_stop
from strategy.representative import is_representative

if TYPE_CHECKING:
    from dataflows.race.state import RaceState
    from strategy.field import Situation
    from strategy.models import StrategyModels

log = logging.getLogger("racewire.strategy")

#: simulations per lap for the calls of all cars (common random numbers across candidates)
DEFAULT_SIMS = 100
#: a live stint's degradation counts only with at least this many representative laps
MIN_LIVE_LAPS = 5


@dataclass(slots=True)
class _CarLap:
    lap: int
    lap_time_s: float | None
    green: bool
    stint: int
    compound: str | None
    tyre_age: int | None
    stops: int
    status: str
    features: Stint | None
    #: the lap ended in the pit lane for a stop (not a red-flag trip)
    pit_in: bool = False


@dataclass(slots=True)
class Strategist:
    """Per race: each car's laps, and the calls for a completed lap."""

    n_sims: int = DEFAULT_SIMS
    #: the process's models (:func:`strategy.models.load_models`; None: the shipped ones). Pickled
    #: as a reference to their directory, so a recovery snapshot does not store them
    models: StrategyModels | None = field(default=None, compare=False, repr=False)
    laps: dict[int, list[_CarLap]] = field(default_factory=dict)
    #: calls that fell back to the rules (for the logs and tests)
    fallbacks: int = 0

    def observe(self, u: DriverUpdate, features: Stint | None = None) -> None:
        """A lap the race state applied, with the car's current stint features after it."""
        lap = u.lap
        # the laps the lap-time model was trained on: its live inputs are the same kind of laps
        green = is_representative(lap.lap, lap.lap_time_ms, lap.track_status, lap.pit_in, lap.pit_out)
        self.laps.setdefault(lap.driver_number, []).append(_CarLap(
            lap.lap, None if lap.lap_time_ms is None else lap.lap_time_ms / 1000.0, green, u.stint,
            u.compound, u.tyre_age, u.pit_count, str(lap.track_status), features,
            starts_stop(lap.pit_in, lap.track_status)))

    def situation(self, state: RaceState, lap: int) -> Situation:
        """The race at the line at the end of ``lap`` (each car's laps up to ``lap``)."""
        from strategy.field import CarInput, Situation

        timing = state.timing
        session = state.session
        cars = []
        field_laps: list[float] = []
        team_laps: dict[str, list[float]] = {}
        for number, history in self.laps.items():
            info = state.cars.get(number)
            team = info.driver.team if info else ""
            for h in history:
                if h.lap > lap:
                    break
                if h.green and h.lap_time_s is not None:
                    field_laps.append(h.lap_time_s)
                    team_laps.setdefault(team, []).append(h.lap_time_s)
        for number, tc in timing.cars.items():
            k = min(tc.laps, lap)
            info = state.cars.get(number)
            history = self.laps.get(number, [])
            if k == 0 or info is None or len(history) < k:
                continue
            h = history[k - 1]
            leader = timing.by_lap[k][0][0]
            greens = [x for x in history[:k] if x.green and x.lap_time_s is not None]
            stint_greens = [x.lap_time_s for x in greens if x.stint == h.stint]
            recent = tuple(s for s in stint_greens[-3:] if s is not None)
            f = h.features
            start = f.start_lap if f is not None else k
            deg = se = None
            if f is not None and f.laps_used >= MIN_LIVE_LAPS and f.degradation_stderr is not None:
                deg, se = (f.degradation_ms_per_lap or 0.0) / 1000.0, f.degradation_stderr / 1000.0
            # running at the end of lap N (a car may have retired or finished since); a car the
            # calls stopped waiting for has gone silent: as good as out
            active = ((tc.retired_ms is None or tc.retired_ms > timing.by_lap[lap][0][0])
                      and not state.gone_silent(number))
            team = info.driver.team
            cars.append((not active, -k, tc.crossings[k - 1], CarInput(
                number=number, code=info.driver.code, team=team, gap_s=(tc.crossings[k - 1] - leader) / 1000.0,
                compound=h.compound, tyre_age=h.tyre_age if h.tyre_age is not None else k - start + 1,
                stint_lap=k - start + 1, stops=h.stops,
                used_compounds=tuple(sorted({x.compound for x in history[:k] if x.compound})),
                active=active, recent_laps_s=recent,
                driver_pace_s=_median([x.lap_time_s for x in greens if x.lap_time_s is not None]),
                team_pace_s=_median(team_laps.get(team, [])),
                degradation_s=deg, degradation_stderr_s=se, last_status=h.status,
                pitting=h.pit_in, in_lap_loss_s=_in_lap_loss(h, recent))))
        cars.sort(key=lambda c: c[:3])
        ordered = [c[3] for c in cars]
        pit_loss = session.pit_loss_ms / 1000.0 if session.pit_loss_ms else None
        return Situation(circuit=session.circuit or session.name, lap=lap, total_laps=session.total_laps,
                         cars=ordered, track_status=str(state.track_status), field_pace_s=_median(field_laps),
                         pit_loss_s=pit_loss)

    def _models(self) -> StrategyModels:
        if self.models is None:
            from strategy.models import load_models

            self.models = load_models()
        return self.models

    def calls(self, state: RaceState, lap: int) -> list[Recommendation]:
        """One call per running car for the end of ``lap``."""
        situation = self.situation(state, lap)
        if not any(c.active for c in situation.cars):
            return []
        seed = zlib.crc32(f"{state.race_id}:{lap}".encode())
        calls: list[Any]
        try:
            calls, model = simulate_calls(situation, self._models(), self.n_sims, seed)
        except Exception as exc:  # the calls must not stop the race flow: the rules answer
            from strategy.rules import rule_calls

            self.fallbacks += 1
            log.warning("strategy calls for %s lap %d fell back to the rules: %s", state.race_id, lap, exc)
            calls, model = rule_calls(situation, f"{type(exc).__name__}: {exc}"), "rule-based"
        return [_record(state.race_id, lap, c, model) for c in calls]


def simulate_calls(situation: Situation, strategy_models: StrategyModels, n_sims: int, seed: int
                   ) -> tuple[list[Any], str]:
    """The Monte Carlo calls for a situation, and the name of what produced them. A car in the
    middle of a stop is simulated out of the pits on the compound its best plan takes; its call
    (for the next stop) says so."""
    from strategy.calls import recommend
    from strategy.field import build
    from strategy.rules import rule_calls

    built = build(situation, strategy_models)
    calls = recommend(built.field, built.model, n_sims=n_sims, seed=seed)
    pitting: dict[int, str] = built.notes.get("pitting", {})
    calls = [replace(c, explanation=f"pitting now ({pitting[c.number]} assumed); next: {c.explanation}")
             if c.number in pitting else c for c in calls]
    model = f"montecarlo {n_sims} sims; {built.notes.get('lap_time', 'lap time ?')}"
    if built.fallback:
        reasons = "; ".join(built.notes["reasons"])
        model += f" (fallback: {reasons})"
    if not calls:
        return rule_calls(situation, "the simulation returned no calls"), "rule-based"
    return calls, model


def _record(race_id: str, lap: int, c: Any, model: str) -> Recommendation:
    return Recommendation(
        event_id=f"{race_id}:rec:{c.number}:{lap}", race_id=race_id, driver_number=int(c.number), lap=lap,
        action=str(c.action), pit_window_start=_int(c.pit_window_start), pit_window_end=_int(c.pit_window_end),
        compound=c.compound, undercut_threat=_float(c.undercut_threat), overcut_chance=_float(c.overcut_chance),
        expected_position=_float(c.expected_position), model=model, explanation=c.explanation or "")


def _int(x: Any) -> int | None:
    return None if x is None else int(x)


def _float(x: Any) -> float | None:
    return None if x is None else round(float(x), 4)


def _in_lap_loss(h: _CarLap, recent: tuple[float, ...]) -> float | None:
    """How much slower than the car's recent green pace its in-lap was (s), when both are known."""
    if not h.pit_in or h.lap_time_s is None or not recent:
        return None
    return max(0.0, h.lap_time_s - median(recent))


def _median(values: list[float]) -> float | None:
    return median(values) if values else None
