"""``racewire evaluate`` on the real lap tables: the lap-time model beats the naive baseline."""

from __future__ import annotations

from pathlib import Path

import pytest

from strategy import data, evaluate


@pytest.mark.acceptance
def test_lap_time_model_beats_the_baseline_on_2021(shared_data: Path) -> None:
    pool = shared_data / "laps_pool"
    train = data.pool_files("grand_prix", evaluate.DEFAULT_TRAIN_YEARS, root=pool)
    test = data.pool_files("grand_prix", evaluate.DEFAULT_TEST_YEARS, root=pool)
    if not train or not test:
        pytest.skip("laps_pool Grands Prix 2018-2021 not present")
    result = evaluate.evaluate(train, test, quiet=True)
    assert result["laps"] > 5000
    assert result["train_races"] >= 50 and result["test_races"] >= 15
    assert result["model_mae_s"] < result["baseline_mae_s"]
    assert result["improvement_pct"] > 5.0
