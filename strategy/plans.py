"""Candidate strategies for one car, the optimal ones, and head-to-head comparison.

Cars are named by their car number. A :class:`~strategy.montecarlo.Strategy` lists the stops the
car will still make; everything else in the field runs on its own expected plan
(:func:`~strategy.montecarlo.expected_plans`) and reacts on track (full interacting simulation).
Strategies of one car are compared with common random numbers (same seed, same draws).

Ranking: expected finishing position, with one second of mean race time worth 0.01 places
(a tie-break that matters when positions do not move, e.g. a leader far ahead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from strategy.montecarlo import (
    COMPOUNDS,
    FieldState,
    RaceModel,
    SimResult,
    Strategy,
    expected_plans,
    simulate,
    tables,
)

__all__ = ["StrategyOutcome", "candidates", "compare", "expected_time", "optimal"]

TIME_WEIGHT = 0.01  # places per second of mean race time in the ranking score


@dataclass(frozen=True, slots=True)
class StrategyOutcome:
    """Monte Carlo outcome of one strategy for one car. Times in seconds from the snapshot."""

    strategy: Strategy
    expected_position: float
    position_probs: tuple[float, ...]  # index p-1: P(finishing p-th), p = 1..n
    mean_time_s: float  # over the simulations the car finished (NaN if none)
    p10_time_s: float
    p50_time_s: float
    p90_time_s: float
    delta_to_best_s: float  # mean time minus the best-ranked outcome's mean time
    p_gain: float  # P(finishing ahead of the current running position)
    p_retire: float
    expected_time_s: float  # deterministic estimate (no noise, no traffic, expected SC pit discount)

    @property
    def score(self) -> float:
        return self.expected_position + TIME_WEIGHT * (self.mean_time_s if math.isfinite(self.mean_time_s) else 1e6)

    def to_dict(self) -> dict[str, object]:
        return {
            "strategy": self.strategy.label,
            "stops": [list(s) for s in self.strategy.stops],
            "expected_position": self.expected_position,
            "position_probs": list(self.position_probs),
            "mean_time_s": self.mean_time_s,
            "p10_time_s": self.p10_time_s,
            "p50_time_s": self.p50_time_s,
            "p90_time_s": self.p90_time_s,
            "delta_to_best_s": self.delta_to_best_s,
            "p_gain": self.p_gain,
            "p_retire": self.p_retire,
            "expected_time_s": self.expected_time_s,
        }


def _ranked(field_state: FieldState, model: RaceModel, car: int) -> list[tuple[float, Strategy]]:
    i = field_state.index_of(car)
    if not field_state.active[i]:
        raise ValueError(f"car {car} is not running")
    _, tabs = tables(field_state, model)
    out: list[tuple[float, Strategy]] = []
    if tabs.t0[i] < 1e17:
        out.append((float(tabs.t0[i]), Strategy(())))
    lap0 = field_state.lap
    ks, cs = np.nonzero(tabs.t1[i] < 1e17)
    for k, c in zip(ks.tolist(), cs.tolist(), strict=True):
        out.append((float(tabs.t1[i, k, c]), Strategy(((lap0 + 1 + k, COMPOUNDS[c]),))))
    ks, cs = np.nonzero(tabs.t2[i] < 1e17)
    for k, c in zip(ks.tolist(), cs.tolist(), strict=True):
        out.append((float(tabs.t2[i, k, c]), tabs.two_stop(i, k, c)))
    out.sort(key=lambda x: x[0])
    return out


def candidates(field_state: FieldState, model: RaceModel, car: int) -> list[Strategy]:
    """Rule-respecting strategies for car number ``car``, best deterministic expected time first.

    0 more stops (if the tyres last and the rule is met), 1 more stop at every sensible in-lap
    onto every allowed compound, and, for every first stop, the best 2-stop continuation. Sensible:
    no stint longer than :meth:`RaceModel.stint_limits`; dry compounds in a dry race (the
    two-compound rule when ``model.two_compound_rule``), wet ones if the car is on a wet tyre.
    """
    return [s for _, s in _ranked(field_state, model, car)]


def expected_time(field_state: FieldState, model: RaceModel, car: int, strategy: Strategy) -> float:
    """Deterministic expected remaining race time (s) of ``strategy`` for car ``car``: no noise,
    no traffic, pit loss discounted by the chance of an SC/VSC on the in-lap."""
    strategy.validate(field_state)
    from strategy.montecarlo import prepare

    prep = prepare(field_state, model)
    i = field_state.index_of(car)
    lap0 = field_state.lap
    c, age, start = int(prep.comp0[i]), int(prep.age0[i]), 0
    total = float(prep.const[i])
    for lap, compound in [*strategy.stops, (field_state.total_laps, "")]:
        m = lap - lap0 - start
        total += prep.cum[c, age + m] - prep.cum[c, age]
        if compound:
            total += prep.pit_cost[lap - lap0 - 1]
            c, age, start = COMPOUNDS.index(compound), 0, lap - lap0
    return float(total)


def _outcome(res: SimResult, i: int, strategy: Strategy, current_pos: int, det: float) -> StrategyOutcome:
    n = res.positions.shape[1]
    pos = res.positions[:, i].astype(np.int64)
    probs = np.bincount(pos - 1, minlength=n)[:n] / res.n_sims
    t = res.race_time_s[:, i]
    t = t[np.isfinite(t)]
    q = np.quantile(t, [0.1, 0.5, 0.9]) if t.size else np.full(3, np.nan)
    return StrategyOutcome(
        strategy=strategy,
        expected_position=float(pos.mean()),
        position_probs=tuple(float(p) for p in probs),
        mean_time_s=float(t.mean()) if t.size else math.nan,
        p10_time_s=float(q[0]),
        p50_time_s=float(q[1]),
        p90_time_s=float(q[2]),
        delta_to_best_s=0.0,
        p_gain=float(np.mean(pos < current_pos)),
        p_retire=float(res.retired[:, i].mean()),
        expected_time_s=det,
    )


def compare(field_state: FieldState, model: RaceModel, car: int, strategies: list[Strategy],
            n_sims: int = 1000, seed: int = 0) -> list[StrategyOutcome]:
    """Monte Carlo each strategy of car ``car`` against the field on its expected plans.

    Same seed for every strategy (common random numbers). Returns the outcomes best first
    (expected position, then mean time); ``delta_to_best_s`` is relative to the first.
    """
    i = field_state.index_of(car)
    if not field_state.active[i]:
        raise ValueError(f"car {car} is not running")
    for s in strategies:
        s.validate(field_state)
    base = expected_plans(field_state, model)
    current = int(np.sum(field_state.active[:i])) + 1
    outs = []
    for s in strategies:
        plans = base.copy()
        plans.set(i, s)
        res = simulate(field_state, model, plans, n_sims=n_sims, seed=seed)
        outs.append(_outcome(res, i, s, current, expected_time(field_state, model, car, s)))
    outs.sort(key=lambda o: o.score)
    if not outs:
        return []
    best = outs[0].mean_time_s
    return [_with_delta(o, o.mean_time_s - best) for o in outs]


def _with_delta(o: StrategyOutcome, delta: float) -> StrategyOutcome:
    from dataclasses import replace

    return replace(o, delta_to_best_s=float(delta))


def optimal(field_state: FieldState, model: RaceModel, car: int, n_sims: int = 1000, seed: int = 0,
            top: int = 5, screen: int = 12) -> list[StrategyOutcome]:
    """The ``top`` best strategies of car ``car``.

    Deterministic pre-screen of :func:`candidates` (keeping the ``screen`` fastest, and the fastest
    of each stop count), then :func:`compare` of those with common random numbers while the rest of
    the field runs its expected plans.
    """
    ranked = _ranked(field_state, model, car)
    if not ranked:
        return []
    chosen: list[Strategy] = [s for _, s in ranked[:screen]]
    for n_stops in (0, 1, 2):
        best = next((s for _, s in ranked if len(s.stops) == n_stops), None)
        if best is not None and best not in chosen:
            chosen.append(best)
    return compare(field_state, model, car, chosen, n_sims=n_sims, seed=seed)[:top]
