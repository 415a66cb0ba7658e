"""From a race situation (cars at the line, their tyres and pace) to the Monte Carlo's inputs.

One builder for both callers: the race dataflow (the state at the end of each lap) and the web
API (the live state in Redis, or a situation posted by a strategist). It asks the models for
what they know (next-lap pace of every car, degradation and pace offset per compound, safety-car
odds per lap, pit-lane loss) and blends in what the race itself shows:

- **degradation**: the model's estimate for the circuit and compound is combined with every live
  stint on that compound that has a slope (inverse-variance weighting, DESIGN.md's fuel-corrected
  degradation with its standard error), so a race that eats its tyres faster than history says
  moves the calls;
- **pace**: the lap-time model predicts each car's next green lap from its recent laps
  (see :mod:`strategy.features`); with no model, the rule-based fallback does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from strategy.features import LapContext, compound_name
from strategy.fuel import fuel_s_per_lap
from strategy.models import StrategyModels
from strategy.montecarlo import COMPOUNDS, FieldState, RaceModel

#: the model's degradation is never trusted more than this (s per lap) of standard error
MIN_PRIOR_STDERR_S = 0.005
DRY = COMPOUNDS[:3]


@dataclass(slots=True)
class CarInput:
    """One car at the timing line."""

    number: int
    code: str = ""
    team: str | None = None
    #: time behind the leader at the line, seconds (a lapped car: including the lap)
    gap_s: float = 0.0
    compound: str | None = None
    #: laps done on the current set of tyres
    tyre_age: int = 0
    #: laps done in the current stint
    stint_lap: int = 0
    stops: int = 0
    used_compounds: tuple[str, ...] = ()
    active: bool = True
    #: gap to the car ahead at the line, seconds (traffic)
    interval_s: float | None = None
    #: previous green laps in this stint, oldest first, seconds
    recent_laps_s: tuple[float, ...] = ()
    driver_pace_s: float | None = None
    team_pace_s: float | None = None
    #: live fuel-corrected degradation of the current stint, s per lap of tyre age, and its stderr
    degradation_s: float | None = None
    degradation_stderr_s: float | None = None
    #: track status of the car's last lap
    last_status: str = "GREEN"
    #: its last lap ended in the pit lane: the stop is under way (its new tyres are not known yet)
    pitting: bool = False
    #: how much slower than its pace that in-lap was, seconds (None: half the pit loss is assumed)
    in_lap_loss_s: float | None = None


@dataclass(slots=True)
class Situation:
    """The race at the line after the leader completed ``lap`` laps; ``cars`` in running order."""

    circuit: str | None
    lap: int
    total_laps: int
    cars: list[CarInput]
    track_status: str = "GREEN"
    field_pace_s: float | None = None
    #: known pit-lane loss (e.g. from the session); None → the model's for the circuit
    pit_loss_s: float | None = None

    def __post_init__(self) -> None:
        # the interval to the car ahead, where not given: the difference of the gaps to the leader
        for ahead, car in zip(self.cars, self.cars[1:], strict=False):
            if car.interval_s is None:
                car.interval_s = max(0.0, car.gap_s - ahead.gap_s)


@dataclass(slots=True)
class Built:
    field: FieldState
    model: RaceModel
    #: what answered: model names and versions, fallbacks with their reasons
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def fallback(self) -> bool:
        return bool(self.notes.get("fallback"))


def compound_index(name: str | None) -> int:
    """Index in :data:`COMPOUNDS`; an unknown compound counts as MEDIUM (the middle of the range)."""
    c = compound_name(name)
    return COMPOUNDS.index(c) if c in COMPOUNDS else 1


def build(situation: Situation, models: StrategyModels) -> Built:
    """The Monte Carlo inputs for ``situation``. Raises ``ValueError`` on an impossible situation
    (no cars, a lap beyond the race distance)."""
    s = situation
    if not s.cars:
        raise ValueError("the situation has no cars")
    if not 0 <= s.lap < s.total_laps:
        raise ValueError(f"lap {s.lap} is not before the race distance ({s.total_laps} laps)")
    notes: dict[str, Any] = {"fallback": False, "reasons": []}

    contexts = [LapContext(
        circuit=s.circuit, lap=s.lap + 1, total_laps=s.total_laps, compound=compound_name(c.compound)
        if c.compound else None, tyre_age=c.tyre_age + 1, stint_lap=c.stint_lap + 1, position=i + 1,
        gap_ahead_s=c.interval_s, track_status="GREEN", recent_laps_s=c.recent_laps_s,
        driver_pace_s=c.driver_pace_s, team_pace_s=c.team_pace_s, field_pace_s=s.field_pace_s,
        prev_track_status=c.last_status) for i, c in enumerate(s.cars)]
    pred = models.lap_time(contexts)
    pace = np.asarray(pred.values_s, dtype=np.float64)
    notes["lap_time"] = pred.model
    _note(notes, "lap time", pred.fallback, pred.reason)
    # a car with nothing to go on (no laps yet, no field pace): the field's median prediction
    good = np.isfinite(pace)
    if not good.all():
        pace[~good] = float(np.median(pace[good])) if good.any() else 90.0

    offset = np.zeros(len(COMPOUNDS))
    linear = np.zeros(len(COMPOUNDS))
    quad = np.zeros(len(COMPOUNDS))
    for k, name in enumerate(COMPOUNDS):
        deg = models.degradation(s.circuit, name)
        offset[k], quad[k] = deg.offset_s, deg.quadratic_s_per_lap2
        linear[k] = _blend(deg.linear_s_per_lap, deg.stderr_s_per_lap,
                           [(c.degradation_s, c.degradation_stderr_s) for c in s.cars
                            if c.active and compound_index(c.compound) == k])
        if k == 1:
            notes["degradation"] = deg.model
            _note(notes, "degradation", deg.fallback, deg.reason)

    sc, vsc, _red = models.safety_car_curve(s.circuit, s.total_laps)
    loss = models.pit_loss(s.circuit)
    notes["pit_loss"] = loss.model
    _note(notes, "pit loss", loss.fallback, loss.reason)
    pit_loss_s = s.pit_loss_s if s.pit_loss_s else float(loss.seconds)

    n = len(s.cars)
    fs = FieldState(
        lap=s.lap, total_laps=s.total_laps,
        numbers=np.array([c.number for c in s.cars], dtype=np.int32),
        gap_s=np.array([max(0.0, c.gap_s) for c in s.cars], dtype=np.float64),
        compound=np.array([compound_index(c.compound) for c in s.cars], dtype=np.int8),
        tyre_age=np.array([max(0, c.tyre_age) for c in s.cars], dtype=np.int32),
        pace_s=pace,
        used_dry=np.array([_used_mask(c) for c in s.cars], dtype=np.int8),
        stops=np.array([c.stops for c in s.cars], dtype=np.int32),
        active=np.array([c.active for c in s.cars], dtype=np.bool_),
        codes=tuple(c.code or str(c.number) for c in s.cars),
    )
    rm = RaceModel(
        compound_offset_s=offset, deg_linear_s=linear, deg_quadratic_s=quad,
        fuel_s_per_lap=fuel_s_per_lap(s.total_laps), pit_loss_s=pit_loss_s,
        pit_loss_sc_factor=float(loss.sc_factor), pit_loss_vsc_factor=float(loss.vsc_factor),
        sc_prob=np.asarray(sc, dtype=np.float64), vsc_prob=np.asarray(vsc, dtype=np.float64),
        two_compound_rule=all(compound_index(c.compound) < 3 for c in s.cars[:n] if c.compound),
    )
    pitting = {i: c for i, c in enumerate(s.cars) if c.pitting and c.active and fs.compound[i] < 3}
    if pitting:
        notes["pitting"] = _commit_stops(fs, rm, pitting)
    return Built(fs, rm, notes)


def _commit_stops(fs: FieldState, rm: RaceModel, pitting: dict[int, CarInput]) -> dict[int, str]:
    """Cars in the middle of a stop: the stop is done in ``fs`` (in place) and the compound each
    is assumed to take is returned by car number.

    The compound is the one its best plan would take boxing now (the plan tables, so the tyre rules
    and stint limits hold); the car comes out of the pits on new tyres with the rest of the pit
    loss added to its gap (the loss less what the in-lap already cost; half when not known).
    """
    from strategy.montecarlo import tables

    _prep, tabs = tables(fs, rm)
    chosen: dict[int, str] = {}
    for i, car in pitting.items():
        dry = np.minimum(tabs.t1[i, 0, :3], tabs.t2[i, 0, :3])
        c = int(dry.argmin()) if dry.min() < 1e17 else 2  # nothing feasible: a durable set
        old, age = int(fs.compound[i]), float(fs.tyre_age[i])
        lost = car.in_lap_loss_s if car.in_lap_loss_s is not None else rm.pit_loss_s / 2.0
        rest = min(max(rm.pit_loss_s - lost, 0.25 * rm.pit_loss_s), rm.pit_loss_s)
        # the same car on new tyres: its pace on them, from its pace on the old ones
        fs.pace_s[i] += rm.tyre_s(c, 0.0) - rm.tyre_s(old, age)
        fs.gap_s[i] += rest
        fs.compound[i], fs.tyre_age[i] = c, 0
        fs.stops[i] += 1
        fs.used_dry[i] |= 1 << c
        chosen[int(fs.numbers[i])] = COMPOUNDS[c]
    # it rejoins behind whoever passed it in the pits (running cars by gap, the others after them)
    order = np.lexsort((fs.gap_s, ~fs.active))
    if (order != np.arange(fs.n)).any():
        fs.reorder(order)
    return chosen


def _note(notes: dict[str, Any], what: str, fallback: bool, reason: str | None) -> None:
    if fallback:
        notes["fallback"] = True
        notes["reasons"].append(f"{what}: {reason or 'rule-based'}")


def _blend(prior: float, prior_se: float | None, live: Sequence[tuple[float | None, float | None]]) -> float:
    """Inverse-variance combination of the model's slope with live stint slopes (s per lap).

    >>> round(_blend(0.05, 0.02, [(0.15, 0.02)]), 3)
    0.1
    >>> _blend(0.05, 0.02, [(None, None), (0.3, None)])
    0.05
    """
    se = max(prior_se or 0.0, MIN_PRIOR_STDERR_S)
    num, den = prior / se**2, 1.0 / se**2
    for slope, stderr in live:
        if slope is None or stderr is None or not math.isfinite(slope) or stderr <= 0:
            continue
        w = 1.0 / stderr**2
        num, den = num + slope * w, den + w
    return num / den


def _used_mask(c: CarInput) -> int:
    mask = 0
    for name in (*c.used_compounds, c.compound):
        k = compound_index(name) if name else -1
        if 0 <= k < 3:
            mask |= 1 << k
    return mask
