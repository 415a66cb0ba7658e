"""Per-lap strategy calls for every running car: stay out, box now, box in a window.

Built to run inside the race dataflow after every lap (a few milliseconds for a full field,
single thread, after warm-up). How:

1. deterministic plan tables for every car (:func:`strategy.montecarlo.tables`): each car's best
   plan, and the best continuation for every first in-lap and compound;
2. one recorded Monte Carlo of the whole field, everybody on their expected plans, keeping every
   car's crossing time after every lap and the SC/VSC state of every lap;
3. for each car, its options re-simulated *alone* against that recorded field with common random
   numbers: stay out (no stop in the next ``window`` laps, then the best plan), or box at the end
   of each of the next ``window`` laps (best compound and continuation; options more than
   ``screen_s`` slower than the best by the deterministic estimate are skipped). The car is held up
   by, and can pass, the recorded cars; **the field does not react** to the car's new plan (nobody
   covers an undercut, and the car holds nobody up);
4. undercut / overcut: the same re-simulation of two neighbours over the next two laps, ignoring
   each other's recorded runs.

Options are ranked by expected finishing position, one second of expected race time counting
0.01 places. The call boxes only when the best stop beats staying out by more than ``margin``
places (or staying out breaks a rule or a stint limit).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from strategy.montecarlo import (
    COMPOUNDS,
    MAX_STOPS,
    FieldState,
    PlanTables,
    RaceModel,
    Strategy,
    plans_from_tables,
    record_field,
    run_focal,
    simulate,
    tables,
)

if TYPE_CHECKING:
    from strategy.models import StrategyModels

__all__ = ["Action", "Call", "recommend", "warm_up"]

Action = Literal["STAY_OUT", "BOX_THIS_LAP", "BOX_IN_WINDOW", "NO_CALL"]
TIME_WEIGHT = 0.01  # places per second of expected race time
_INF = 1e17


@dataclass(frozen=True, slots=True)
class Call:
    """The call for one car after the leader completed ``FieldState.lap`` laps.

    Pit-window laps are in-laps (box at the end of that lap); ``BOX_THIS_LAP`` means the lap being
    driven now (lap + 1). ``expected_position`` is that of the recommended option;
    ``gain_places`` how many expected places it is better than staying out (0 for STAY_OUT).
    """

    number: int
    action: Action
    pit_window_start: int | None
    pit_window_end: int | None
    compound: str | None
    undercut_threat: float
    overcut_chance: float
    expected_position: float
    explanation: str
    gain_places: float = 0.0
    plan: Strategy | None = None  # the stops behind the call (the rest of the race)

    def to_dict(self) -> dict[str, object]:
        return {
            "number": self.number,
            "action": self.action,
            "pit_window_start": self.pit_window_start,
            "pit_window_end": self.pit_window_end,
            "compound": self.compound,
            "undercut_threat": round(self.undercut_threat, 3),
            "overcut_chance": round(self.overcut_chance, 3),
            "expected_position": round(self.expected_position, 2),
            "explanation": self.explanation,
            "gain_places": round(self.gain_places, 2),
            "plan": [list(s) for s in self.plan.stops] if self.plan is not None else None,
        }


@dataclass(slots=True)
class _Option:
    strategy: Strategy
    in_lap: int | None  # None: stay out
    det_time: float
    job: int = -1
    expected_position: float = 0.0
    mean_time: float = 0.0

    @property
    def score(self) -> float:
        return self.expected_position + TIME_WEIGHT * self.mean_time


def _best_from(tabs: PlanTables, i: int, k: int, c: int) -> tuple[float, Strategy]:
    lap0 = tabs.lap0
    t1, t2 = float(tabs.t1[i, k, c]), float(tabs.t2[i, k, c])
    if t1 <= t2:
        return t1, Strategy(((lap0 + 1 + k, COMPOUNDS[c]),))
    return t2, tabs.two_stop(i, k, c)


def _options(tabs: PlanTables, i: int, window: int, screen_s: float, max_box: int) -> list[_Option]:
    """Stay out (first), then box at up to ``max_box`` of the next ``window`` in-laps (deterministic screen)."""
    R = tabs.t1.shape[1]
    tb = np.minimum(tabs.t1[i], tabs.t2[i])  # [R, 5]
    w = max(min(window, R - 1), 0)  # in-laps lap+1 .. lap+w (never the last lap)
    best_c = tb.argmin(axis=1)
    best_t = tb[np.arange(R), best_c]
    opts: list[_Option] = []
    stay_t = float(tabs.t0[i])
    stay = Strategy(())
    if w < R - 1:
        k = w + int(np.argmin(best_t[w : R - 1]))
        if best_t[k] < stay_t:
            stay_t, stay = _best_from(tabs, i, k, int(best_c[k]))
    if stay_t < _INF:
        opts.append(_Option(stay, None, stay_t))
    box = [(k, float(best_t[k])) for k in range(w) if best_t[k] < _INF]
    if not box and not opts:
        return []
    det_best = min([t for _, t in box] + ([stay_t] if opts else []))
    keep = [(k, t) for k, t in box if t <= det_best + screen_s]
    if not keep and not opts:
        keep = box[:1]
    # at most ``max_box`` in-laps: the fastest by the estimate, and this lap whenever it passed the screen
    chosen = sorted(keep, key=lambda kt: kt[1])[:max_box]
    if keep and keep[0][0] == 0 and all(k != 0 for k, _ in chosen):
        chosen[-1] = keep[0]
    for k, t in sorted(chosen):
        _, s = _best_from(tabs, i, k, int(best_c[k]))
        opts.append(_Option(s, tabs.lap0 + 1 + k, t))
    return opts


def _stop_compounds(tabs: PlanTables, field_state: FieldState) -> np.ndarray:
    """[n, 2]: the compound each car would take boxing at the end of this lap (0) or the next (1):
    the best one feasible, else a durable set."""
    R = tabs.t1.shape[1]
    out = np.where(field_state.compound < 3, 2, 3)[:, None].repeat(2, axis=1).astype(np.int64)
    k = min(R, 2)
    if k:
        tb = np.minimum(tabs.t1[:, :k], tabs.t2[:, :k])  # [n, k, 5]
        feasible = tb.min(axis=2) < _INF
        out[:, :k] = np.where(feasible, tb.argmin(axis=2), out[:, :k])
    return out


def recommend(field_state: FieldState, model: RaceModel, n_sims: int = 100, seed: int = 0, *,
              window: int = 5, margin: float = 0.15, screen_s: float = 5.0, max_box: int = 3) -> list[Call]:
    """One :class:`Call` per running car (running order). Deterministic for a seed.

    ``window``: how many in-laps ahead a stop is considered; ``margin``: expected places a stop
    must gain over staying out, and the tolerance that defines the pit window around the best
    in-lap; ``screen_s``: box options slower than the best by more than this (deterministic
    estimate) are not simulated; ``max_box``: at most this many in-laps are simulated per car
    (the fastest by the estimate, and this lap when it passes the screen). See the module doc for
    the method and what it ignores.
    """
    prep, tabs = tables(field_state, model)
    n = field_state.n
    lap0 = field_state.lap
    R = prep.R
    act = np.flatnonzero(field_state.active)
    if act.size == 0:
        return []
    plans = plans_from_tables(field_state, tabs)
    rec = record_field(prep, plans, n_sims, seed)

    # jobs: options of every car (full distance), then the two-lap duels of neighbours
    cars: list[int] = []
    excl: list[int] = []
    laps: list[int] = []
    stops: list[tuple[tuple[int, int], ...]] = []

    def job(car: int, other: int, n_laps: int, plan: tuple[tuple[int, int], ...]) -> int:
        cars.append(car)
        excl.append(other)
        laps.append(n_laps)
        stops.append(plan)
        return len(cars) - 1

    options: dict[int, list[_Option]] = {}
    for i in act.tolist():
        opts = _options(tabs, i, window, screen_s, max_box)
        for o in opts:
            o.job = job(i, -1, R, tuple((lap, COMPOUNDS.index(c)) for lap, c in o.strategy.stops))
        options[i] = opts
    duels: list[tuple[int, int, int, int]] = []  # (ahead, behind, job undercut-scenario pair, overcut pair)
    if R >= 3:
        comp = _stop_compounds(tabs, field_state).tolist()
        for x, y in zip(act[:-1].tolist(), act[1:].tolist(), strict=True):
            (cx0, cx1), (cy0, cy1) = comp[x], comp[y]
            ju = job(y, x, 2, ((lap0 + 1, cy0),))
            job(x, y, 2, ((lap0 + 2, cx1),))
            jo = job(x, y, 2, ((lap0 + 1, cx0),))
            job(y, x, 2, ((lap0 + 2, cy1),))
            duels.append((x, y, ju, jo))
    J = len(cars)
    pit_lap = np.full((J, MAX_STOPS), -1, np.int64)
    pit_comp = np.full((J, MAX_STOPS), -1, np.int64)
    for j, plan in enumerate(stops):
        for m, (lap, c) in enumerate(plan):
            pit_lap[j, m] = lap
            pit_comp[j, m] = c
    pos, key = run_focal(prep, rec, seed, np.asarray(cars, np.int64), np.asarray(excl, np.int64),
                         pit_lap, pit_comp, np.asarray(laps, np.int64))

    threat = np.zeros(n)
    overcut = np.zeros(n)
    for x, y, ju, jo in duels:
        threat[x] = float(np.mean(key[ju] < key[ju + 1]))  # y boxed first and came out ahead of x
        overcut[y] = float(np.mean(key[jo + 1] < key[jo]))  # y stayed out a lap longer and is ahead of x
    behind = {x: y for x, y, _, _ in duels}
    ahead = {y: x for x, y, _, _ in duels}

    exp_pos = pos.mean(axis=1)
    finished = key < 1e11
    n_fin = finished.sum(axis=1)
    mean_t = np.where(finished, key, 0.0).sum(axis=1) / np.maximum(n_fin, 1)
    mean_t[n_fin == 0] = 1e6
    calls = []
    for i in act.tolist():
        opts = options[i]
        for o in opts:
            o.expected_position = float(exp_pos[o.job])
            o.mean_time = float(mean_t[o.job])
        calls.append(_call(field_state, i, opts, float(threat[i]), float(overcut[i]), behind.get(i), ahead.get(i),
                           margin))
    return calls


def _call(fs: FieldState, i: int, opts: list[_Option], threat: float, overcut: float,
          behind: int | None, ahead: int | None, margin: float) -> Call:
    number = int(fs.numbers[i])
    lap0 = fs.lap
    if not opts:
        return Call(number, "NO_CALL", None, None, None, threat, overcut, float("nan"),
                    "no call: no plan meets the tyre rules and stint limits", 0.0, None)
    stay = next((o for o in opts if o.in_lap is None), None)
    boxes = [o for o in opts if o.in_lap is not None]
    best_box = min(boxes, key=lambda o: o.score) if boxes else None
    neighbours = _neighbours(fs, i, threat, overcut, behind, ahead)
    if stay is not None and (best_box is None or best_box.score > stay.score - margin):
        nxt = stay.strategy.stops[0] if stay.strategy.stops else None
        if nxt is None:
            text = "stay out: no further stop needed"
        else:
            text = f"stay out: next stop around L{nxt[0]} for {nxt[1]}"
        if best_box is not None:
            cost = best_box.expected_position - stay.expected_position
            text += f"; boxing L{best_box.in_lap} {'costs' if cost >= 0 else 'gains'} {abs(cost):.1f} expected places"
        return Call(number, "STAY_OUT", None, None, nxt[1] if nxt else None, threat, overcut,
                    stay.expected_position, text + neighbours, 0.0, stay.strategy)
    assert best_box is not None and best_box.in_lap is not None
    window = [o.in_lap for o in boxes if o.in_lap is not None and o.score <= best_box.score + margin]
    start, end = min(window), max(window)
    compound = best_box.strategy.stops[0][1]
    if best_box.in_lap == lap0 + 1:
        action: Action = "BOX_THIS_LAP"
        when = f"box this lap (L{lap0 + 1})"
        start = lap0 + 1
    else:
        action = "BOX_IN_WINDOW"
        when = f"box L{start}-L{end}" if start != end else f"box L{start}"
    if stay is not None:
        gain = stay.expected_position - best_box.expected_position
        why = f"{gain:+.1f} expected places vs staying out"
    else:
        gain = 0.0
        why = "staying out breaks the tyre rules or stint limit"
    return Call(number, action, start, end, compound, threat, overcut, best_box.expected_position,
                f"{when} for {compound}: {why}{neighbours}", gain, best_box.strategy)


def _neighbours(fs: FieldState, i: int, threat: float, overcut: float, behind: int | None, ahead: int | None) -> str:
    parts = []
    if behind is not None and threat >= 0.05:
        parts.append(f"{fs.name(behind)} {fs.gap_s[behind] - fs.gap_s[i]:.1f} s behind, {threat:.0%} undercut threat")
    if ahead is not None and overcut >= 0.05:
        parts.append(f"{overcut:.0%} overcut chance on {fs.name(ahead)} {fs.gap_s[i] - fs.gap_s[ahead]:.1f} s ahead")
    return "".join(f"; {p}" for p in parts)


def warm_up(models: StrategyModels | None = None) -> float:
    """Compile (or load from cache) every Monte Carlo kernel (the race simulation's and the calls')
    on a tiny race and, given the models, build a tiny situation with them (their first predictions
    are slow too): the one warm-up, run before the first race needs it. Returns the seconds it took."""
    t = time.perf_counter()
    fs = FieldState(lap=1, total_laps=5, numbers=np.array([1, 2]), gap_s=np.array([0.0, 1.0]),
                    compound=np.array([1, 0]), tyre_age=np.array([1, 1]), pace_s=np.array([90.0, 90.0]),
                    used_dry=np.array([2, 1]), stops=np.array([0, 0]), active=np.array([True, True]))
    model = RaceModel.typical(5)
    simulate(fs, model, n_sims=4)
    recommend(fs, model, n_sims=4)
    if models is not None:
        from strategy.field import CarInput, Situation, build

        cars = [CarInput(number=n, code=f"C{n:02d}", gap_s=1.5 * i, compound="MEDIUM", tyre_age=5, stint_lap=5,
                         recent_laps_s=(90.0, 90.1, 90.2)) for i, n in enumerate(range(1, 5))]
        built = build(Situation(circuit=None, lap=5, total_laps=20, cars=cars, field_pace_s=90.0), models)
        recommend(built.field, built.model, n_sims=8, seed=0)
    return time.perf_counter() - t
