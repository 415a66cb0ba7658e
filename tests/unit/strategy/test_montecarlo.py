"""The Monte Carlo race simulator: physics with noise off, rules, randomness."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from strategy.calls import warm_up
from strategy.montecarlo import (
    COMPOUNDS,
    FieldState,
    Plans,
    RaceModel,
    Strategy,
    expected_plans,
    simulate,
)

MEDIUM, HARD = COMPOUNDS.index("MEDIUM"), COMPOUNDS.index("HARD")


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    warm_up()  # compile (or load) the kernels once, outside the timed tests


def make_field(gaps: list[float], paces: list[float], *, lap: int = 0, total: int = 30,
               compound: list[int] | None = None, age: list[int] | None = None,
               used: list[int] | None = None, active: list[bool] | None = None) -> FieldState:
    n = len(gaps)
    comp = np.array(compound if compound is not None else [MEDIUM] * n)
    return FieldState(
        lap=lap, total_laps=total, numbers=np.arange(1, n + 1), gap_s=np.array(gaps), compound=comp,
        tyre_age=np.array(age if age is not None else [0] * n), pace_s=np.array(paces),
        used_dry=np.array(used if used is not None else (1 << comp)), stops=np.zeros(n),
        active=np.array(active if active is not None else [True] * n))


def quiet_model(total: int = 30, **kw: Any) -> RaceModel:
    """No noise, no SC/VSC, no retirements, no wear, no compound offsets."""
    base: dict[str, Any] = {
        "compound_offset_s": np.zeros(5), "deg_linear_s": np.zeros(5), "deg_quadratic_s": np.zeros(5),
        "sc_prob": np.zeros(total), "vsc_prob": np.zeros(total), "lap_noise_s": 0.0, "retirement_prob": 0.0,
        "fuel_s_per_lap": 0.0, "two_compound_rule": False,
    }
    base.update(kw)
    return RaceModel(**base)


def test_car_slightly_faster_is_held_up_all_race() -> None:
    field = make_field([0.0, 0.8], [90.0, 89.5])
    res = simulate(field, quiet_model(pass_delta_s=1.0), Plans.none(2), n_sims=50, seed=1)
    assert (res.positions[:, 1] == 2).all()
    gap = res.race_time_s[:, 1] - res.race_time_s[:, 0]
    assert np.allclose(gap, 0.5)  # held at the follow gap


def test_much_faster_car_passes() -> None:
    field = make_field([0.0, 0.8], [90.0, 88.0])
    res = simulate(field, quiet_model(pass_delta_s=1.0), Plans.none(2), n_sims=50, seed=1)
    assert (res.positions[:, 1] == 1).all()


def test_pit_stop_under_safety_car_is_cheaper() -> None:
    total = 20
    sc = np.zeros(total)
    sc[9] = 1.0  # SC certainly deployed during lap 10
    model = quiet_model(total, sc_prob=sc, sc_laps=1.0)
    field = make_field([0.0], [90.0], total=total)
    times = {}
    for lap in (5, 10):
        plans = Plans.none(1)
        plans.set(0, Strategy(((lap, "HARD"),)))
        times[lap] = simulate(field, model, plans, n_sims=20, seed=3).race_time_s[:, 0]
    saving = (1 - model.pit_loss_sc_factor) * model.pit_loss_s
    assert np.allclose(times[5] - times[10], saving)


def test_safety_car_bunches_the_field_and_keeps_lapped_cars_lapped() -> None:
    total = 20
    sc = np.zeros(total)
    sc[2] = 1.0
    model = quiet_model(total, sc_prob=sc, sc_laps=4.0)
    field = make_field([0.0, 20.0, 120.0], [90.0, 90.0, 90.0], total=total)
    res = simulate(field, model, Plans.none(3), n_sims=20, seed=1)
    gap = res.race_time_s[:, 1] - res.race_time_s[:, 0]
    assert (gap < 20.0 * model.sc_compress + 1.0).all()
    assert (res.race_time_s[:, 2] - res.race_time_s[:, 1] > 90.0).all()
    assert (res.positions == np.array([1, 2, 3])).all()


def test_everybody_retires_with_probability_one() -> None:
    field = make_field([0.0, 1.0, 2.0], [90.0, 90.0, 90.0], active=[True, False, True])
    res = simulate(field, quiet_model(retirement_prob=1.0), Plans.none(3), n_sims=10, seed=1)
    assert res.retired.all()
    assert np.isnan(res.race_time_s).all()
    # retired on the same lap: running order kept; the car already out stays last
    assert (res.positions == np.array([1, 3, 2])).all()


def test_inactive_car_stays_last() -> None:
    field = make_field([0.0, 1.0, 2.0], [90.0, 80.0, 90.0], active=[True, False, True])
    res = simulate(field, quiet_model(), Plans.none(3), n_sims=10, seed=1)
    assert (res.positions[:, 1] == 3).all()
    assert res.retired[:, 1].all() and not res.retired[:, [0, 2]].any()


def _race(n: int = 12) -> tuple[FieldState, RaceModel]:
    rng = np.random.default_rng(7)
    total = 40
    comp = rng.choice([0, 1, 2], n)
    age = rng.integers(1, 8, n)
    model = RaceModel.typical(total, sc_per_race=1.0)
    pace = 90 + np.linspace(0, 1, n) + model.compound_offset_s[comp] + model.deg_linear_s[comp] * age
    field = make_field(list(np.cumsum(rng.uniform(0.3, 3.0, n)) - 0.3), list(pace), lap=8, total=total,
                       compound=list(comp), age=list(age))
    return field, model


def test_deterministic_for_a_seed_and_independent_of_batch_size() -> None:
    field, model = _race()
    a = simulate(field, model, n_sims=300, seed=11)
    b = simulate(field, model, n_sims=300, seed=11)
    c = simulate(field, model, n_sims=300, seed=12)
    first = simulate(field, model, n_sims=37, seed=11)
    assert np.array_equal(a.positions, b.positions) and np.array_equal(a.race_time_s, b.race_time_s, equal_nan=True)
    assert not np.array_equal(a.positions, c.positions)
    assert np.array_equal(first.positions, a.positions[:37])  # one stream per simulation


def test_positions_are_permutations_and_probabilities_sum_to_one() -> None:
    field, model = _race()
    res = simulate(field, model, n_sims=500, seed=2)
    n = field.n
    assert (np.sort(res.positions, axis=1) == np.arange(1, n + 1)).all()
    dist = res.position_distribution()
    assert np.allclose(dist.sum(axis=1), 1.0) and np.allclose(dist.sum(axis=0), 1.0)
    assert np.allclose(res.expected_position(), dist @ np.arange(1, n + 1))
    q = res.time_quantiles([0.1, 0.5, 0.9])
    assert q.shape == (3, n) and (np.diff(q, axis=0) >= 0).all()


def test_two_compound_rule_forces_a_stop() -> None:
    field = make_field([0.0], [90.0], lap=20, total=30, compound=[HARD], age=[20], used=[1 << HARD])
    model = RaceModel.typical(30)
    stops = expected_plans(field, model).strategy(0).stops
    assert len(stops) >= 1 and stops[0][1] != "HARD"
    relaxed = RaceModel.typical(30, two_compound_rule=False)
    assert expected_plans(field, relaxed).strategy(0).stops == ()


def test_strategy_validation() -> None:
    field = make_field([0.0], [90.0], lap=10, total=30)
    with pytest.raises(ValueError, match="unknown compound"):
        Strategy(((15, "SUPERSOFT"),))
    with pytest.raises(ValueError, match="increase"):
        Strategy(((15, "HARD"), (12, "SOFT")))
    for lap in (10, 30):
        with pytest.raises(ValueError, match="in-lap"):
            Strategy(((lap, "HARD"),)).validate(field)
    assert Strategy(((22, "HARD"),)).label == "box L22 → HARD"


def test_field_validation() -> None:
    with pytest.raises(ValueError, match="gap_s"):
        FieldState(lap=1, total_laps=10, numbers=np.array([1, 2]), gap_s=np.array([0.0]),
                   compound=np.array([1, 1]), tyre_age=np.array([1, 1]), pace_s=np.array([90.0, 90.0]),
                   used_dry=np.array([2, 2]), stops=np.array([0, 0]), active=np.array([True, True]))
    field = make_field([0.0], [90.0], total=30)
    with pytest.raises(ValueError, match="one probability per lap"):
        simulate(field, quiet_model(10), n_sims=2)
