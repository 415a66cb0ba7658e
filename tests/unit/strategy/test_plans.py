"""Candidate, optimal and compared strategies of one car."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from strategy.calls import warm_up
from strategy.montecarlo import COMPOUNDS, RaceModel, Strategy
from strategy.plans import candidates, compare, expected_time, optimal
from tests.unit.strategy.test_montecarlo import make_field

MEDIUM = COMPOUNDS.index("MEDIUM")


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    warm_up()


def _field(lap: int = 5, total: int = 50):  # type: ignore[no-untyped-def]
    return make_field([0.0, 2.0, 4.5, 7.0], [90.0, 90.1, 90.2, 90.3], lap=lap, total=total,
                      compound=[MEDIUM] * 4, age=[lap] * 4)


def test_candidates_respect_the_rules_and_are_sorted() -> None:
    field = _field()
    model = RaceModel.typical(50)
    cands = candidates(field, model, car=2)
    assert cands and len({c for c in cands}) == len(cands)
    limits = model.stint_limits(50)
    times = [expected_time(field, model, 2, c) for c in cands]
    assert times == sorted(times)
    for c in cands:
        c.validate(field)
        assert 1 <= len(c.stops) <= 2  # on its only compound: must stop
        assert any(comp != "MEDIUM" for _, comp in c.stops)
        laps = [field.lap - field.tyre_age[1], *[lap for lap, _ in c.stops], field.total_laps]
        comps = ["MEDIUM", *[comp for _, comp in c.stops]]
        for (start, end), comp in zip(itertools.pairwise(laps), comps, strict=True):
            assert end - start <= max(limits[COMPOUNDS.index(comp)], 1)


def test_higher_degradation_stops_more_or_earlier() -> None:
    field = _field()
    low = optimal(field, RaceModel.typical(50, deg_scale=0.6), car=1, n_sims=200, seed=1, top=1)[0].strategy
    high = optimal(field, RaceModel.typical(50, deg_scale=2.0), car=1, n_sims=200, seed=1, top=1)[0].strategy
    assert len(high.stops) > len(low.stops) or high.stops[0][0] < low.stops[0][0]


def test_compare_ranks_a_bad_strategy_below_a_sensible_one() -> None:
    field = _field()
    model = RaceModel.typical(50, deg_scale=0.5)
    sensible = Strategy(((27, "HARD"),))
    bad = Strategy(((10, "SOFT"), (20, "SOFT"), (30, "HARD")))
    out = compare(field, model, car=2, strategies=[bad, sensible], n_sims=300, seed=4)
    assert [o.strategy for o in out] == [sensible, bad]
    assert out[0].delta_to_best_s == 0.0 and out[1].delta_to_best_s > 10.0
    assert out[1].expected_position > out[0].expected_position
    for o in out:
        assert np.isclose(sum(o.position_probs), 1.0)
        assert o.p10_time_s <= o.p50_time_s <= o.p90_time_s
        assert 0.0 <= o.p_gain <= 1.0


def test_optimal_is_deterministic_and_sorted() -> None:
    field = _field()
    model = RaceModel.typical(50)
    a = optimal(field, model, car=3, n_sims=200, seed=5, top=3)
    b = optimal(field, model, car=3, n_sims=200, seed=5, top=3)
    assert a == b and len(a) == 3
    assert [o.score for o in a] == sorted(o.score for o in a)


def test_unknown_or_retired_car() -> None:
    field = make_field([0.0, 1.0], [90.0, 90.0], lap=5, total=50, active=[True, False])
    model = RaceModel.typical(50)
    with pytest.raises(ValueError, match="not in the field"):
        candidates(field, model, car=44)
    with pytest.raises(ValueError, match="not running"):
        optimal(field, model, car=2, n_sims=10)
