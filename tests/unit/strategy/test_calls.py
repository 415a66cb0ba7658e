"""Per-lap calls: actions, pit windows, undercut and overcut."""

from __future__ import annotations

import numpy as np
import pytest

from strategy.calls import recommend, warm_up
from strategy.montecarlo import COMPOUNDS, RaceModel
from tests.unit.strategy.test_montecarlo import make_field

SOFT, MEDIUM, HARD = (COMPOUNDS.index(c) for c in ("SOFT", "MEDIUM", "HARD"))


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    warm_up()


def _model(total: int, **kw: float) -> RaceModel:
    return RaceModel.typical(total, sc_per_race=0.0, vsc_per_race=0.0, **kw)  # type: ignore[arg-type]


def test_undercut_threat_close_behind_on_old_tyres_vs_far_behind() -> None:
    total = 50
    model = _model(total, deg_scale=2.5)
    for gap, low, high in ((1.0, 0.6, 1.0), (30.0, 0.0, 0.02)):
        field = make_field([0.0, gap], [92.0, 92.0], lap=20, total=total, compound=[MEDIUM, MEDIUM],
                           age=[18, 18], used=[1 << MEDIUM, 1 << MEDIUM])
        lead = recommend(field, model, n_sims=200, seed=1)[0]
        assert low <= lead.undercut_threat <= high, (gap, lead)


def test_overcut_chance_is_low_when_the_tyres_are_dead() -> None:
    field = make_field([0.0, 1.0], [92.0, 92.0], lap=20, total=50, compound=[MEDIUM, MEDIUM], age=[18, 18])
    second = recommend(field, _model(50, deg_scale=2.5), n_sims=200, seed=1)[1]
    assert second.overcut_chance < 0.3


def test_no_stop_needed_means_stay_out() -> None:
    # both compounds used, fresh hards, ten laps to go
    field = make_field([0.0, 3.0], [91.0, 91.2], lap=40, total=50, compound=[HARD, HARD], age=[2, 3],
                       used=[(1 << HARD) | (1 << MEDIUM)] * 2)
    for call in recommend(field, _model(50), n_sims=100, seed=2):
        assert call.action == "STAY_OUT", call
        assert call.pit_window_start is None and call.plan is not None and call.plan.stops == ()
        assert "no further stop" in call.explanation


def test_dead_tyres_mean_box_this_lap() -> None:
    field = make_field([0.0, 5.0], [91.0, 95.0], lap=30, total=50, compound=[HARD, SOFT], age=[5, 35],
                       used=[(1 << HARD) | (1 << MEDIUM), 1 << SOFT])
    call = recommend(field, _model(50), n_sims=100, seed=2)[1]
    assert call.action == "BOX_THIS_LAP", call
    assert call.pit_window_start == 31 and call.compound in ("MEDIUM", "HARD")
    assert call.explanation.startswith("box this lap (L31)")


def test_one_call_per_running_car_and_deterministic() -> None:
    rng = np.random.default_rng(3)
    n = 10
    comp = list(rng.choice([SOFT, MEDIUM, HARD], n))
    field = make_field(list(np.cumsum(rng.uniform(0.5, 3.0, n))), list(91 + rng.uniform(0, 1, n)), lap=15,
                       total=50, compound=comp, age=list(rng.integers(5, 15, n)),
                       active=[True] * 8 + [False, True])
    model = RaceModel.typical(50)
    a = recommend(field, model, n_sims=64, seed=9)
    b = recommend(field, model, n_sims=64, seed=9)
    assert a == b
    assert [c.number for c in a] == [1, 2, 3, 4, 5, 6, 7, 8, 10]
    for c in a:
        assert c.action in ("STAY_OUT", "BOX_THIS_LAP", "BOX_IN_WINDOW", "NO_CALL")
        assert 0.0 <= c.undercut_threat <= 1.0 and 0.0 <= c.overcut_chance <= 1.0
        assert 1.0 <= c.expected_position <= n
        if c.action == "BOX_IN_WINDOW":
            assert c.pit_window_start is not None and c.pit_window_end is not None
            assert field.lap + 1 < c.pit_window_start <= c.pit_window_end or c.pit_window_start > field.lap
        assert c.to_dict()["number"] == c.number
