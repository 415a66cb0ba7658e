"""Strategy calls inside the race state: one per running car after every lap, the same whatever the
arrival order, and the rule-based fallback when the simulation fails."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from dataflows.race import strategist as strategist_module
from dataflows.race.driver import DriverState, DriverUpdate
from dataflows.race.processor import RaceProcessor
from dataflows.race.strategist import Strategist
from schemas.model import Lap, Recommendation, Session, Stint, Telemetry
from simulator.race import RaceSimulator
from strategy.field import CarInput, Situation, build
from strategy.models import load_models
from strategy.montecarlo import COMPOUNDS
from strategy.rules import rule_calls, tyre_life_laps

LAPS = 12
ACTIONS = {"STAY_OUT", "BOX_THIS_LAP", "BOX_IN_WINDOW", "NO_CALL"}


@cache
def _records() -> tuple[Session, tuple[Any, ...]]:
    sim = RaceSimulator("strat", seed=3, laps=LAPS)
    # telemetry is left out: the calls come from the timing line (and it keeps the test quick)
    return sim.session, tuple(r for r in sim.records() if not isinstance(r, Telemetry))


def _run(records: list[Any], n_sims: int = 64,
         proc: RaceProcessor | None = None) -> tuple[list[Recommendation], list[Stint]]:
    """Feed the records in batches of 40 as a fast replay would: 1,000 records a second."""
    proc = proc or RaceProcessor("strat", strategist=Strategist(n_sims=n_sims))
    drivers: dict[int, DriverState] = {}
    out: list[Any] = []
    for i in range(0, len(records), 40):
        batch = []
        for r in records[i:i + 40]:
            if isinstance(r, Lap):
                u = drivers.setdefault(r.driver_number, DriverState()).update(r)
                assert isinstance(u, DriverUpdate)
                batch.append((u, None))
            else:
                batch.append((r, None))
        out.extend(proc.on_batch(batch, i / 1000))
    return ([o for o in out if isinstance(o, Recommendation)], [o for o in out if isinstance(o, Stint)])


def test_every_running_car_gets_one_call_after_every_lap() -> None:
    session, records = _records()
    recs, stints = _run(list(records))
    by_lap: dict[int, list[Recommendation]] = {}
    for r in recs:
        by_lap.setdefault(r.lap, []).append(r)
    assert sorted(by_lap) == list(range(1, LAPS))  # no call after the last lap
    n = len(session.drivers)
    for lap, calls in by_lap.items():
        assert len({c.driver_number for c in calls}) == len(calls) <= n, lap
        assert len(calls) >= n - 3, lap  # retirements may remove a few
    assert len({r.event_id for r in recs}) == len(recs)
    for r in recs:
        assert r.action in ACTIONS
        assert r.model.startswith("montecarlo"), r.model
        if r.action in ("BOX_THIS_LAP", "BOX_IN_WINDOW"):
            assert r.pit_window_start is not None and r.pit_window_end is not None
            assert r.lap < r.pit_window_start <= r.pit_window_end < LAPS
            assert r.compound in ("SOFT", "MEDIUM", "HARD")
        if r.action == "BOX_THIS_LAP":
            assert r.pit_window_start == r.lap + 1
        for p in (r.undercut_threat, r.overcut_chance):
            assert p is None or 0.0 <= p <= 1.0
        assert r.expected_position is not None and 1.0 <= r.expected_position <= n
        assert r.explanation
    # stint features came out too, lap by lap, for every car
    assert {s.driver_number for s in stints} == {d.number for d in session.drivers}


def test_calls_do_not_depend_on_the_order_records_arrive_in() -> None:
    _session, records = _records()
    first, _ = _run(list(records))
    # the leader's laps arrive about a lap late (its partition lags behind the others)
    late = next(r.driver_number for r in records if isinstance(r, Lap))
    order = [(i + (30 if isinstance(r, Lap) and r.driver_number == late else 0), i) for i, r in enumerate(records)]
    second, _ = _run([records[i] for _k, i in sorted(order)])
    assert len(first) == len(second)
    assert sorted(first, key=lambda r: r.event_id) == sorted(second, key=lambda r: r.event_id)


def test_half_the_field_read_laps_late_still_gets_its_calls() -> None:
    """A fast replay where the partitions of half the cars are read some three laps behind the others'
    (what a busy machine did to a replayed Bahrain): no lap is called without them."""
    session, records = _records()
    first, _ = _run(list(records))
    numbers = sorted(d.number for d in session.drivers)
    late = set(numbers[::2])
    shift = 3 * len(numbers)  # about three laps of lap records
    order = [(i + (shift if isinstance(r, Lap) and r.driver_number in late else 0), i)
             for i, r in enumerate(records)]
    second, _ = _run([records[i] for _k, i in sorted(order)])
    assert sorted(first, key=lambda r: r.event_id) == sorted(second, key=lambda r: r.event_id)


def test_a_car_gone_silent_stops_holding_the_calls_back_after_the_grace_period() -> None:
    session, records = _records()
    gone = [r.driver_number for r in records if isinstance(r, Lap) and r.lap == 3][4]  # fifth across the line
    kept = [r for r in records if not (isinstance(r, Lap) and r.driver_number == gone and r.lap > 3)]
    proc = RaceProcessor("strat", strategist=Strategist(n_sims=16))
    recs, _ = _run(kept, proc=proc)
    assert max(r.lap for r in recs) <= 3  # the replay is over within the grace period: still waiting
    deadline = proc.notify_at_s()
    assert deadline is not None
    late = [o for o in proc.on_notify(deadline) if isinstance(o, Recommendation)]
    laps = sorted({r.lap for r in late})
    assert laps[0] == 4 and laps == list(range(4, laps[-1] + 1)) and laps[-1] >= LAPS - 2
    assert gone not in {r.driver_number for r in late}
    assert len({r.driver_number for r in late if r.lap == 4}) >= len(session.drivers) - 4


def test_a_failing_simulation_falls_back_to_the_rules_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(strategist_module, "simulate_calls", broken)
    _session, records = _records()
    recs, _ = _run(list(records)[: len(records) // 2])
    assert recs
    assert all(r.model == "rule-based" for r in recs)
    assert all("rule-based: RuntimeError: kernel exploded" in r.explanation for r in recs)


def test_rules_stop_a_car_on_its_only_compound_and_leave_one_that_can_reach_the_flag() -> None:
    s = Situation(circuit=None, lap=40, total_laps=57, cars=[
        CarInput(number=1, code="AAA", compound="HARD", tyre_age=15, used_compounds=("MEDIUM", "HARD")),
        CarInput(number=2, code="BBB", gap_s=3.0, compound="MEDIUM", tyre_age=40, used_compounds=("MEDIUM",)),
    ])
    first, second = rule_calls(s, "no model")
    assert first.action == "STAY_OUT"  # 15 + 17 laps on hards (they last 34), two compounds used
    assert second.action == "BOX_THIS_LAP" and second.compound in ("SOFT", "HARD")
    assert second.pit_window_start == 41 and "rule-based: no model" in second.explanation
    assert tyre_life_laps("SOFT", 57) < tyre_life_laps("MEDIUM", 57) < tyre_life_laps("HARD", 57)


def test_live_degradation_moves_the_model_and_bad_situations_are_refused() -> None:
    models = load_models()
    cars = [CarInput(number=n, code=f"C{n}", gap_s=float(n), compound="MEDIUM", tyre_age=10, stint_lap=10,
                     recent_laps_s=(95.0, 95.1, 95.2)) for n in range(1, 6)]
    base = build(Situation(circuit="Bahrain Grand Prix", lap=10, total_laps=57, cars=cars), models)
    for c in cars:
        c.degradation_s, c.degradation_stderr_s = 0.25, 0.01  # this race eats mediums
    worn = build(Situation(circuit="Bahrain Grand Prix", lap=10, total_laps=57, cars=cars), models)
    assert worn.model.deg_linear_s[1] > base.model.deg_linear_s[1] + 0.1
    assert worn.model.deg_linear_s[0] == base.model.deg_linear_s[0]  # no live soft stints
    assert base.field.pace_s.shape == (5,) and 90 < base.field.pace_s[0] < 100
    with pytest.raises(ValueError, match="race distance"):
        build(Situation(circuit=None, lap=57, total_laps=57, cars=cars), models)
    with pytest.raises(ValueError, match="no cars"):
        build(Situation(circuit=None, lap=5, total_laps=57, cars=[]), models)


def _bahrain_field(pitting: bool) -> Situation:
    cars = [CarInput(number=n, code=f"C{n}", gap_s=2.0 * (n - 1), compound="MEDIUM", tyre_age=20, stint_lap=20,
                     used_compounds=("MEDIUM",), recent_laps_s=(96.0, 96.1, 96.2)) for n in range(1, 7)]
    cars[1].pitting, cars[1].in_lap_loss_s = pitting, 8.0  # C2 ended lap 20 in the pit lane
    return Situation(circuit="Bahrain Grand Prix", lap=20, total_laps=57, cars=cars, pit_loss_s=22.0)


def test_a_car_on_its_in_lap_rejoins_on_new_tyres_and_is_not_told_to_box() -> None:
    models = load_models()
    before = build(_bahrain_field(pitting=False), models)
    built = build(_bahrain_field(pitting=True), models)
    f = built.field
    i = f.index_of(2)
    assert built.notes["pitting"] == {2: COMPOUNDS[int(f.compound[i])]}
    assert COMPOUNDS[int(f.compound[i])] in ("SOFT", "HARD")  # a second dry compound: the rule is met
    assert f.tyre_age[i] == 0 and f.stops[i] == 1 and f.used_dry[i] & 0b10
    assert f.gap_s[i] == pytest.approx(2.0 + 22.0 - 8.0)  # the rest of the pit loss
    assert f.numbers.tolist() == [1, 3, 4, 5, 6, 2]  # it rejoins behind the cars that passed it
    assert f.pace_s[i] < before.field.pace_s[before.field.index_of(2)]  # new tyres are faster
    calls, _model = strategist_module.simulate_calls(_bahrain_field(pitting=True), models, 64, 1)
    mine = next(c for c in calls if c.number == 2)
    assert mine.action not in ("BOX_THIS_LAP",)
    assert mine.explanation.startswith(f"pitting now ({built.notes['pitting'][2]} assumed); next: ")
    rules = rule_calls(_bahrain_field(pitting=True), "no model")
    assert [c.action for c in rules if c.number == 2] == ["NO_CALL"]


def test_calls_in_the_race_flow_know_which_cars_are_pitting() -> None:
    _session, records = _records()
    recs, _ = _run(list(records))
    in_laps = {(r.driver_number, r.lap) for r in records if isinstance(r, Lap) and r.pit_in and r.lap < LAPS}
    assert in_laps, "the simulated race has pit stops"
    by_key = {(r.driver_number, r.lap): r for r in recs}
    for key in in_laps:
        call = by_key[key]
        assert call.explanation.startswith("pitting now ("), call.explanation
        assert call.action != "BOX_THIS_LAP"
