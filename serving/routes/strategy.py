"""Strategy: the live calls of a race, model predictions, race simulations and strategy search.

The simulations run in a worker thread (the Numba kernels release the GIL), so a long request
never stalls the event loop that feeds the SSE streams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from schemas.settings import Settings
from serving.auth import Operator
from serving.deps import RACE_ID_PATTERN, RaceId, RateLimited, SettingsDep, StoreDep
from serving.store import RaceStore
from serving.strategy import (
    CompareIn,
    DegradationIn,
    DegradationOut,
    LapTimeIn,
    LapTimeOut,
    OptimalIn,
    RaceSimIn,
    SafetyCarOut,
    situation_from_live,
)
from strategy.field import Situation
from strategy.models import StrategyModels, load_models

races = APIRouter(prefix="/races", tags=["strategy"], dependencies=[RateLimited])
router = APIRouter(tags=["strategy"], dependencies=[RateLimited])

UNPROCESSABLE: dict[int | str, dict[str, Any]] = {422: {"description": "invalid input (the message names the field)"}}
NEEDS_RACE: dict[int | str, dict[str, Any]] = {
    404: {"description": "unknown race"}, 409: {"description": "the race has nothing left to simulate"},
    **UNPROCESSABLE}
#: simulations and strategy search: the operator role, and a bound on the work (RACEWIRE_MAX_SIMULATION_WORK)
EXPENSIVE: dict[int | str, dict[str, Any]] = {
    **NEEDS_RACE, 401: {"description": "no credentials: the operator role is needed"},
    403: {"description": "credentials without the operator role"},
    422: {"description": "invalid input, or more work than RACEWIRE_MAX_SIMULATION_WORK (the message says which)"}}


def _models(settings: Settings) -> StrategyModels:
    """The process's strategy models (``RACEWIRE_MODELS_DIR``), loaded on first use, once."""
    return load_models(settings.models_dir)


@races.get("/{race_id}/strategy", summary="The strategy calls after the latest lap, and every car's stints",
           description="Calls are published by the race dataflow after every lap (also on the "
                       "`f1.strategy.recommendations` topic); stints on `f1.driver.stints`. `calls` holds "
                       "the calls after lap `lap` (one per car running then), best expected position "
                       "first; `earlier` the last call of each car that has had none since (it retired "
                       "or stopped), with its own `lap`.")
async def race_strategy(race_id: RaceId, store: StoreDep) -> dict[str, Any]:
    calls = await store.strategy_calls(race_id)
    stints = await store.stints(race_id)
    by_car: dict[int, list[dict[str, Any]]] = {}
    for doc in stints.values():
        by_car.setdefault(int(doc["driver_number"]), []).append(doc)
    lap = max((c.get("lap") or 0 for c in calls), default=None)
    ranked = sorted(calls, key=lambda c: (c.get("expected_position") or 99, c.get("driver_number")))
    latest = [c for c in ranked if c.get("lap") == lap]
    return {
        "race_id": race_id, "lap": lap, "model": latest[0].get("model") if latest else None,
        "calls": latest,
        "earlier": sorted((c for c in calls if c.get("lap") != lap),
                          key=lambda c: (-(c.get("lap") or 0), c.get("driver_number"))),
        "stints": {str(n): sorted(docs, key=lambda s: s["stint"]) for n, docs in sorted(by_car.items())},
    }


@router.post("/predictions/lap-time", response_model=LapTimeOut, responses=UNPROCESSABLE,
             summary="Predict a lap time (LightGBM model; rule-based fallback says so)")
def predict_lap_time(body: LapTimeIn, settings: SettingsDep) -> dict[str, Any]:
    from strategy.features import LapContext

    ctx = LapContext(circuit=body.circuit, lap=body.lap, total_laps=body.total_laps, compound=body.compound,
                     tyre_age=body.tyre_age, stint_lap=body.stint_lap, position=body.position,
                     gap_ahead_s=body.gap_ahead_s, track_status=body.track_status,
                     recent_laps_s=tuple(body.recent_laps_s), driver_pace_s=body.driver_pace_s,
                     team_pace_s=body.team_pace_s, field_pace_s=body.field_pace_s)
    pred = _models(settings).lap_time([ctx])
    return {"lap_time_s": round(float(pred.values_s[0]), 3), "model": pred.model, "fallback": pred.fallback,
            "reason": pred.reason}


@router.post("/predictions/degradation", response_model=DegradationOut, responses=UNPROCESSABLE,
             summary="Tyre degradation of a compound at a circuit (fuel-corrected), as a curve")
def predict_degradation(body: DegradationIn, settings: SettingsDep) -> dict[str, Any]:
    deg = _models(settings).degradation(body.circuit, body.compound)
    deltas = deg.delta_s(body.tyre_ages)
    return {"circuit": deg.circuit, "compound": deg.compound, "linear_s_per_lap": deg.linear_s_per_lap,
            "quadratic_s_per_lap2": deg.quadratic_s_per_lap2, "stderr_s_per_lap": deg.stderr_s_per_lap,
            "offset_s": deg.offset_s, "model": deg.model, "fallback": deg.fallback, "reason": deg.reason,
            "curve": [{"tyre_age": a, "delta_s": round(float(d), 4)}
                      for a, d in zip(body.tyre_ages, deltas, strict=True)]}


@router.get("/predictions/safety-car", response_model=SafetyCarOut, responses=NEEDS_RACE,
            summary="Safety car, VSC and red flag probability for a lap of a race")
async def predict_safety_car(
    store: StoreDep,
    settings: SettingsDep,
    race: Annotated[str, Query(pattern=RACE_ID_PATTERN, description="race id")],
    lap: Annotated[int | None, Query(ge=1, le=200, description="lap (default: the next lap)")] = None,
) -> dict[str, Any]:
    await store.require(race)
    session = await store.session(race) or {}
    state = await store.state(race) or {}
    total = int(session.get("total_laps") or state.get("total_laps") or 0)
    if total <= 0:
        raise HTTPException(status.HTTP_409_CONFLICT, f"race {race!r} has no race distance yet (no session)")
    if lap is None:
        done = max((int(r.get("laps") or 0) for r in state.get("rows") or []), default=0)
        lap = min(done + 1, total)
    if lap > total:
        raise HTTPException(422,
                            f"lap {lap} is beyond the race distance ({total} laps)")
    circuit = session.get("circuit") or session.get("name")
    models = _models(settings)
    odds = models.safety_car(circuit, lap, total)
    sc, vsc, _red = models.safety_car_curve(circuit, total)
    rest = slice(lap - 1, total)
    return {"race_id": race, "circuit": circuit, "lap": lap, "total_laps": total, "sc": odds.sc, "vsc": odds.vsc,
            "red": odds.red, "sc_rest_of_race": round(1.0 - float((1.0 - sc[rest]).prod()), 4),
            "vsc_rest_of_race": round(1.0 - float((1.0 - vsc[rest]).prod()), 4), "model": odds.model,
            "fallback": odds.fallback, "reason": getattr(odds, "reason", None)}


async def _situation(store: RaceStore, race_id: str | None, posted: Any) -> Situation:
    if posted is not None:
        return posted.situation()  # type: ignore[no-any-return]
    assert race_id is not None
    await store.require(race_id)
    state = await store.state(race_id)
    if state is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"race {race_id!r} has no timing tower yet")
    try:
        return situation_from_live(state, await store.stints(race_id), await store.session(race_id))
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"race {race_id!r}: {exc}") from exc


def _built(situation: Situation, settings: Settings) -> Any:
    from strategy.field import build

    try:
        return build(situation, _models(settings))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc


#: strategy search pre-screens candidates deterministically, then simulates this many of them plus the best
#: of each stop count (0, 1, 2): the number of simulations an optimal-strategy request runs, at most
OPTIMAL_SCREEN = 12
OPTIMAL_RUNS = OPTIMAL_SCREEN + 3


def _bounded(situation: Situation, sims: int, runs: int, limit: int) -> None:
    """422 naming RACEWIRE_MAX_SIMULATION_WORK when the request would simulate more car-laps than it allows."""
    cars, laps = len(situation.cars), max(1, situation.total_laps - situation.lap)
    work = cars * laps * sims * runs
    if work <= limit:
        return
    runs_text = f" x {runs} strategies" if runs > 1 else ""
    most = limit // (cars * laps * runs)
    raise HTTPException(422, f"too much work for one request: {cars} cars x {laps} laps left x {sims} sims"
                             f"{runs_text} = {work:,} simulated car-laps, over RACEWIRE_MAX_SIMULATION_WORK "
                             f"({limit:,}); ask for at most {most} sims here")


def _car(built: Any, number: int) -> int:
    try:
        index = int(built.field.index_of(number))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    if not built.field.active[index]:
        raise HTTPException(422, f"car {number} is not running")
    return index


@router.post("/simulations/race", responses=EXPENSIVE, dependencies=[Operator],
             summary="Monte Carlo of the rest of the race: finishing-position distribution of every car",
             description="From a live race (`race_id`) or a posted `situation`. Every car runs its own expected "
                         "best plan; lap times from the models with noise, tyre wear, pit loss, safety cars and "
                         "VSCs, overtaking difficulty and retirements.")
async def simulate_race(body: RaceSimIn, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    situation = await _situation(store, body.race_id, body.situation)
    _bounded(situation, body.sims, 1, settings.max_simulation_work)

    def work() -> dict[str, Any]:
        from strategy.montecarlo import expected_plans, simulate

        built = _built(situation, settings)
        started = time.perf_counter()
        plans = expected_plans(built.field, built.model)
        result = simulate(built.field, built.model, plans, n_sims=body.sims, seed=body.seed)
        seconds = time.perf_counter() - started
        dist = result.position_distribution()
        exp = result.expected_position()
        q = result.time_quantiles((0.1, 0.5, 0.9))
        f = built.field
        cars = []
        for i in range(f.n):
            cars.append({
                "number": int(f.numbers[i]), "code": f.name(i), "start_position": i + 1,
                "expected_position": round(float(exp[i]), 3),
                "position_probs": [round(float(p), 4) for p in dist[i]],
                "p_win": round(float(dist[i][0]), 4), "p_podium": round(float(dist[i][:3].sum()), 4),
                "p_points": round(float(dist[i][:10].sum()), 4),
                "p_retire": round(float(result.retired[:, i].mean()), 4),
                "race_time_s": _quantiles(q[:, i]), "plan": plans.strategy(i).label,
            })
        return {"lap": f.lap, "total_laps": f.total_laps, "sims": body.sims, "seed": body.seed,
                "seconds": round(seconds, 4), "model": built.notes, "cars": cars}

    return await asyncio.to_thread(work)


@router.post("/strategies/optimal", responses=EXPENSIVE, dependencies=[Operator],
             summary="Best strategies for one car, by expected finishing position and race time")
async def optimal_strategy(body: OptimalIn, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    from strategy.plans import optimal

    return await _for_car(store, body, OPTIMAL_RUNS, settings, lambda built: optimal(
        built.field, built.model, body.driver, n_sims=body.sims, seed=body.seed, top=body.top,
        screen=OPTIMAL_SCREEN))


@router.post("/strategies/compare", responses=EXPENSIVE, dependencies=[Operator],
             summary="Compare given strategies for one car (same random draws for each)")
async def compare_strategies(body: CompareIn, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    from strategy.montecarlo import Strategy
    from strategy.plans import compare

    def run(built: Any) -> list[Any]:
        try:
            strategies = [Strategy(tuple((s.lap, s.compound) for s in st.stops)) for st in body.strategies]
            for st in strategies:
                st.validate(built.field)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        return compare(built.field, built.model, body.driver, strategies, n_sims=body.sims, seed=body.seed)

    return await _for_car(store, body, len(body.strategies), settings, run)


async def _for_car(store: RaceStore, body: Any, runs: int, settings: Settings,
                   search: Callable[[Any], list[Any]]) -> dict[str, Any]:
    """One car's strategy search on the situation of ``body`` (``runs`` simulations at most), in a worker thread."""
    situation = await _situation(store, body.race_id, body.situation)
    _bounded(situation, body.sims, runs, settings.max_simulation_work)

    def work() -> dict[str, Any]:
        built = _built(situation, settings)
        car = _car(built, body.driver)
        started = time.perf_counter()
        outcomes = search(built)
        return _outcomes(built, car, body, outcomes, time.perf_counter() - started)

    return await asyncio.to_thread(work)


def _quantiles(q: Any) -> dict[str, float | None]:
    return {name: (None if v != v else round(float(v), 3)) for name, v in zip(("p10", "p50", "p90"), q, strict=True)}


def _outcomes(built: Any, car: int, body: Any, outcomes: list[Any], seconds: float) -> dict[str, Any]:
    f = built.field
    return {"driver": int(f.numbers[car]), "code": f.name(car), "position": car + 1, "lap": f.lap,
            "total_laps": f.total_laps, "sims": body.sims, "seed": body.seed, "seconds": round(seconds, 4),
            "model": built.notes, "strategies": [_rounded(o.to_dict()) for o in outcomes]}


def _rounded(doc: dict[str, Any]) -> dict[str, Any]:
    """Floats to 4 places; NaN (e.g. a time over no finished simulation) to null."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if isinstance(v, float):
            out[k] = None if v != v else round(v, 4)
        elif isinstance(v, list) and v and isinstance(v[0], float):
            out[k] = [round(x, 4) for x in v]
        else:
            out[k] = v
    return out
