"""The shipped strategy models, their API and their rule-based fallbacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from schemas.settings import load_settings
from strategy.models import SHIPPED, LapContext, StrategyModels, load_models


@pytest.fixture(scope="module")
def models() -> StrategyModels:
    return StrategyModels.load(SHIPPED)


def bahrain(**kw: object) -> LapContext:
    base: dict[str, object] = dict(
        circuit="Bahrain Grand Prix", lap=20, total_laps=57, compound="MEDIUM", tyre_age=10, stint_lap=9,
        position=5, gap_ahead_s=2.5, recent_laps_s=(96.3, 96.1, 96.2), driver_pace_s=96.4, team_pace_s=96.5,
        field_pace_s=96.9,
    )  # fmt: skip
    base.update(kw)
    return LapContext(**base)  # type: ignore[arg-type]


def test_shipped_artifacts_load(models: StrategyModels) -> None:
    d = models.describe()
    json.dumps(d)
    assert models.version != "rule-based"
    for name in ("lap_time", "degradation", "safety_car", "pit_loss"):
        assert d["models"][name]["status"] == "loaded", d["models"][name]["reason"]
    assert d["models"]["lap_time"]["metrics"]["model_mae_s"] < d["models"]["lap_time"]["metrics"]["baseline_mae_s"]
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    size = sum(p.stat().st_size for p in SHIPPED.iterdir() if p.is_file())
    assert size < 2_000_000 and manifest["training_data"]["sha256"]


def test_lap_time_is_sensible(models: StrategyModels) -> None:
    p = models.lap_time([bahrain(), bahrain(recent_laps_s=()), bahrain(recent_laps_s=(), driver_pace_s=None)])
    assert not p.fallback and p.model.startswith("lap-time lightgbm")
    assert p.values_s.shape == (3,) and np.all((p.values_s > 93) & (p.values_s < 100))
    # no pace at all: the circuit's typical lap
    first = models.lap_time([LapContext("bahrain", 1, 57, "SOFT", 1, 1)])
    assert 93 < first.values_s[0] < 110 and "no pace" in (first.reason or "")
    # under a safety car the lap is much slower
    sc = models.lap_time([bahrain(track_status="SC")]).values_s[0]
    assert sc > 1.2 * models.lap_time([bahrain()]).values_s[0]


def test_lap_time_unknown_circuit_and_bad_input(models: StrategyModels) -> None:
    p = models.lap_time([bahrain(circuit="Racewire Park", recent_laps_s=(80.0, 80.1, 80.2))])
    assert not p.fallback and 78 < p.values_s[0] < 83 and "Racewire Park" in (p.reason or "")
    with pytest.raises(ValueError, match="unknown compound"):
        models.lap_time([bahrain(compound="HYPERSOFT")])
    assert models.lap_time([]).values_s.shape == (0,)


def test_degradation(models: StrategyModels) -> None:
    soft, hard = models.degradation("bahrain", "SOFT"), models.degradation("Sakhir", "HARD")
    assert soft.circuit == "bahrain" and not soft.fallback
    assert 0.0 < hard.linear_s_per_lap < 0.3 and 0.0 < soft.linear_s_per_lap < 0.3
    # compound-wide: softer compounds degrade faster
    slopes = [models.degradation(None, c).linear_s_per_lap for c in ("SOFT", "MEDIUM", "HARD")]
    assert slopes[0] > slopes[1] > slopes[2] > 0
    assert soft.stderr_s_per_lap > 0 and soft.quadratic_s_per_lap2 >= 0
    assert soft.delta_s([0])[0] == 0.0 and np.all(np.diff(soft.delta_s(np.arange(40))) > 0)
    assert models.degradation("bahrain", "MEDIUM").offset_s == 0.0
    unknown = models.degradation("Racewire Park", "SOFT")
    assert unknown.circuit is None and not unknown.fallback and "Racewire Park" in (unknown.reason or "")
    with pytest.raises(ValueError):
        models.degradation("bahrain", "PURPLE")


def test_safety_car_curve(models: StrategyModels) -> None:
    sc, vsc, red = models.safety_car_curve("monaco", 78)
    for p in (sc, vsc, red):
        assert p.shape == (78,) and np.all((p > 0) & (p < 1))
        assert p[0] > p[10] and p[1] >= p[10]  # the start is the riskiest
    assert np.all(red < sc)
    assert 0.2 < 1 - np.prod(1 - sc) < 0.95  # a safety car in some races, not all
    odds = models.safety_car("Monaco", 1, 78)
    assert odds.sc == pytest.approx(sc[0]) and odds.circuit == "monaco" and not odds.fallback
    unknown = models.safety_car("Racewire Park", 10, 50)
    assert not unknown.fallback and "Racewire Park" in (unknown.reason or "")
    with pytest.raises(ValueError):
        models.safety_car("monaco", 0, 78)


def test_pit_loss(models: StrategyModels) -> None:
    pl = models.pit_loss("Bahrain Grand Prix")
    assert pl.circuit == "bahrain" and 15 < pl.seconds < 35 and not pl.fallback
    assert 0 < pl.sc_factor < 1 and 0 < pl.vsc_factor < 1 and pl.sc_seconds < pl.seconds
    glob = models.pit_loss("Racewire Park")
    assert 15 < glob.seconds < 35 and "Racewire Park" in (glob.reason or "")


def check_all_fallback(m: StrategyModels, expect: str) -> None:
    d = m.describe()
    assert m.version == "rule-based"
    for info in d["models"].values():
        assert info["status"] == "fallback" and expect in info["reason"]
    p = m.lap_time([bahrain()])
    assert p.fallback and p.model == "rule-based" and expect in (p.reason or "")
    assert 95 < p.values_s[0] < 97.5
    assert m.degradation("bahrain", "SOFT").fallback
    assert m.safety_car("bahrain", 1, 57).fallback and m.pit_loss("bahrain").fallback
    sc, _, _ = m.safety_car_curve(None, 50)
    assert sc.shape == (50,)


def test_missing_directory_falls_back(tmp_path: Path) -> None:
    check_all_fallback(StrategyModels.load(tmp_path / "nowhere"), "no manifest.json")


def test_corrupt_directory_falls_back(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    check_all_fallback(StrategyModels.load(tmp_path), "unreadable manifest.json")


def test_one_corrupt_artifact_falls_back_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    art = tmp_path / "art"
    shutil.copytree(SHIPPED, art)
    (art / "lap_time.txt.gz").write_bytes(b"garbage")
    monkeypatch.setenv("RACEWIRE_MODELS_DIR", str(art))
    m = load_models(load_settings().models_dir)  # as the flow and the API load them
    d = m.describe()["models"]
    assert d["lap_time"]["status"] == "fallback" and "lap_time" in d["lap_time"]["reason"]
    assert d["degradation"]["status"] == "loaded"
    p = m.lap_time([bahrain()])
    assert p.fallback and 95 < p.values_s[0] < 97.5


def test_models_load_once_per_directory_and_pickle_as_a_reference(tmp_path: Path) -> None:
    import pickle

    shipped = load_models()
    assert load_models(SHIPPED) is shipped and load_models(None) is shipped  # one copy per process
    assert pickle.loads(pickle.dumps(shipped)) is shipped  # a recovery snapshot stores the directory only
    assert len(pickle.dumps(shipped)) < 500
    other = load_models(tmp_path)
    assert other is not shipped and other.describe()["models"]["lap_time"]["status"] == "fallback"
