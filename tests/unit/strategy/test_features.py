"""The lap feature pipeline on small synthetic lap tables in the laps_pool format."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from strategy import circuits, data
from strategy import features as F

HEADER = [
    "Time", "Driver", "DriverNumber", "LapTime", "LapNumber", "Stint", "PitOutTime", "PitInTime",
    "IsPersonalBest", "Compound", "TyreLife", "FreshTyre", "Team", "TrackStatus", "Position", "IsAccurate",
    "RoundNumber", "EventName", "IsSlick", "CompoundName", "IsValid", "DeltaToRep", "PctFromRep",
    "DeltaToFastest", "PctFromFastest", "DeltaToLapRep", "PctFromLapRep", "FuelAdjLapTime",
]  # fmt: skip
DRIVERS = [("AAA", "Red"), ("BBB", "Red"), ("CCC", "Blue"), ("DDD", "Blue")]
LAPS = 14
PIT = {"BBB": 6}  # BBB pits at the end of lap 6
SC_LAP = 9  # safety car during lap 9
STATUS = {SC_LAP: "4", SC_LAP + 1: "41"}


def td(seconds: float) -> str:
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"0 days {int(h):02d}:{int(m):02d}:{s:09.6f}"


def race_rows(lap_time_override: dict[tuple[str, int], float] | None = None) -> list[dict[str, object]]:
    rng = np.random.default_rng(3)
    rows = []
    for k, (drv, team) in enumerate(DRIVERS):
        t = 3600.0 + 0.7 * k
        stint, age = 1, 3
        for lap in range(1, LAPS + 1):
            lt = 95.0 + 0.4 * k + 0.05 * age - 0.06 * lap + float(rng.normal(0, 0.2))
            if lap == 1:
                lt += 8.0
            if lap == SC_LAP:
                lt *= 1.4
            pit_in = PIT.get(drv) == lap
            pit_out = PIT.get(drv) == lap - 1
            if pit_in or pit_out:
                lt += 11.0
            lt = (lap_time_override or {}).get((drv, lap), lt)
            t += lt
            rows.append({
                "Time": td(t), "Driver": drv, "DriverNumber": str(k + 1), "LapTime": f"{lt:.3f}",
                "LapNumber": f"{lap}.0", "Stint": f"{stint}.0",
                "PitOutTime": td(t - lt + 5) if pit_out else "", "PitInTime": td(t - 3) if pit_in else "",
                "IsPersonalBest": "False", "Compound": "MEDIUM" if stint == 1 else "HARD", "TyreLife": f"{age}.0",
                "FreshTyre": "True", "Team": team, "TrackStatus": STATUS.get(lap, "1"),
                "Position": "", "IsAccurate": "True", "RoundNumber": "1", "EventName": "Bahrain Grand Prix",
                "IsSlick": "True", "CompoundName": "C3", "IsValid": "True", "DeltaToRep": "0", "PctFromRep": "0",
                "DeltaToFastest": "0", "PctFromFastest": "0", "DeltaToLapRep": "0", "PctFromLapRep": "0",
                "FuelAdjLapTime": "0",
            })  # fmt: skip
            age += 1
            if pit_in:
                stint, age = stint + 1, 1
    return rows


def write_race(path: Path, rows: list[dict[str, object]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HEADER)
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def race_csv(tmp_path: Path) -> Path:
    return write_race(tmp_path / "transformed_grand_prix_laps_2021.csv", race_rows())


def contexts(path: Path) -> pl.DataFrame:
    return F.context_frame(data.load_laps(path))


def row(ctx: pl.DataFrame, driver: str, lap: int) -> dict[str, object]:
    return ctx.filter((pl.col("Driver") == driver) & (pl.col("lap") == lap)).row(0, named=True)


def test_load_parses_times_and_adds_keys(race_csv: Path) -> None:
    df = data.load_laps(race_csv)
    assert df.height == len(DRIVERS) * LAPS
    first = df.filter((pl.col("Driver") == "AAA") & (pl.col("LapNumber") == 1)).row(0, named=True)
    assert first["year"] == 2021 and first["circuit"] == "bahrain" and first["race"] == "2021-01-grand_prix"
    assert first["Time"] == pytest.approx(3600.0 + 95.0 + 0.05 * 3 - 0.06 + 8.0, abs=1.0)
    assert df.filter(pl.col("PitInTime").is_not_null()).height == 1
    assert "DeltaToRep" not in df.columns and "FuelAdjLapTime" not in df.columns


def test_timedelta_text_to_seconds() -> None:
    df = pl.DataFrame({"t": ["0 days 00:39:14.871000", "1 days 01:00:00.5", None]})
    assert df.select(data.timedelta_seconds("t"))["t"].to_list() == [2354.871, 90000.5, None]


def test_baseline_is_median_of_previous_three_green_laps_in_the_stint(race_csv: Path) -> None:
    ctx = contexts(race_csv)
    laps = ctx.filter(pl.col("Driver") == "AAA").sort("lap")["LapTime"].to_list()
    r5 = row(ctx, "AAA", 5)  # greens before lap 5: laps 2, 3, 4 (lap 1 is never green)
    assert r5["recent_n"] == 3 and r5["recent_s"] == pytest.approx(float(np.median(laps[1:4])))
    r3 = row(ctx, "AAA", 3)
    assert r3["recent_n"] == 1 and r3["recent_s"] == pytest.approx(laps[1])
    # the SC laps 9 and 10 are not green: lap 11 still uses laps 6, 7, 8
    r11 = row(ctx, "AAA", 11)
    assert r11["recent_s"] == pytest.approx(float(np.median(laps[5:8])))
    # a new stint starts empty, and in/out laps never count
    b7, b10 = row(ctx, "BBB", 7), row(ctx, "BBB", 10)
    assert b7["recent_n"] == 0 and b7["stint_lap"] == 1 and b7["tyre_age"] == 1
    b_laps = ctx.filter(pl.col("Driver") == "BBB").sort("lap")["LapTime"].to_list()
    assert b10["recent_n"] == 1 and b10["recent_s"] == pytest.approx(b_laps[7])  # lap 8 only (7 is out-lap)
    scored = F.scored_mask(ctx)
    assert all(ctx.filter(pl.Series(scored))["recent_n"] == 3)


def test_features_of_lap_n_do_not_see_lap_n(tmp_path: Path) -> None:
    base = contexts(write_race(tmp_path / "a_2021.csv", race_rows()))
    changed = contexts(write_race(tmp_path / "b_2021.csv", race_rows({("CCC", 7): 140.0})))
    vocab = {"bahrain": 0}
    xa, xb = F.frame_matrix(base, vocab), F.frame_matrix(changed, vocab)
    lap7 = ((base["Driver"] == "CCC") & (base["lap"] == 7)).to_numpy()
    np.testing.assert_array_equal(xa[lap7], xb[lap7])
    # every lap that ended before CCC's lap 7 ended is unchanged too
    end = float(base.filter((pl.col("Driver") == "CCC") & (pl.col("lap") == 7))["Time"][0])
    starts_before = (base["Time"] - base["LapTime"] <= end - 140.0 + 1e-9).fill_null(False).to_numpy()
    np.testing.assert_array_equal(xa[starts_before], xb[starts_before])
    # the next lap does see it (lap 7 is one of its recent green laps)
    lap8 = ((base["Driver"] == "CCC") & (base["lap"] == 8)).to_numpy()
    assert not np.array_equal(xa[lap8], xb[lap8], equal_nan=True)


def test_fuel_correction() -> None:
    assert F.fuel_s_per_lap(55) == pytest.approx(0.03 * 110 / 55)
    assert F.fuel_s(1, 55) == pytest.approx(3.3)
    assert F.fuel_s(55, 55) == pytest.approx(0.06)
    ctx = F.LapContext(circuit=None, lap=11, total_laps=50, compound="SOFT", tyre_age=3, stint_lap=3)
    x = F.matrix([ctx], {})
    assert x[0, F.FEATURES.index("fuel_s")] == pytest.approx(3.3 * 40 / 50)


def test_traffic_from_line_times(race_csv: Path) -> None:
    ctx = contexts(race_csv)
    # cars start 0.7 s apart and AAA is fastest: after lap 1 the order is AAA, BBB, CCC, DDD
    assert row(ctx, "AAA", 2)["position"] == 1 and row(ctx, "AAA", 2)["gap_ahead_s"] is None
    b2 = row(ctx, "BBB", 2)
    assert b2["position"] == 2
    assert b2["gap_ahead_s"] == pytest.approx(row(ctx, "BBB", 1)["Time"] - row(ctx, "AAA", 1)["Time"])
    assert row(ctx, "AAA", 1)["position"] is None  # nothing known before the first lap


def test_polars_and_live_paths_give_identical_features(race_csv: Path) -> None:
    ctx = contexts(race_csv)
    vocab = {"bahrain": 0}
    batch = F.frame_matrix(ctx, vocab)
    live = F.LiveRace("bahrain", int(ctx["total_laps"].max()))  # type: ignore[arg-type]
    built: dict[tuple[str, int], F.LapContext] = {}
    df = data.load_laps(race_csv).sort("Time")
    by_key = {(r["Driver"], r["LapNumber"]): r for r in df.iter_rows(named=True)}
    for drv, _ in DRIVERS:  # lap 1 of every car: nothing known yet
        r = by_key[(drv, 1)]
        built[(drv, 1)] = live.context(drv, r["Compound"], int(r["TyreLife"]), 1, r["TrackStatus"], lap=1)
    for r in df.iter_rows(named=True):
        live.add_lap(
            r["Driver"],
            r["Team"],
            r["LapNumber"],
            r["Time"],
            r["LapTime"],
            r["Stint"],
            r["TrackStatus"],
            pit_in=r["PitInTime"] is not None,
            pit_out=r["PitOutTime"] is not None,
        )
        nxt = by_key.get((r["Driver"], r["LapNumber"] + 1))
        if nxt is None:
            continue
        stint_lap = int(row(ctx, r["Driver"], nxt["LapNumber"])["stint_lap"])
        built[(r["Driver"], nxt["LapNumber"])] = live.context(
            r["Driver"], nxt["Compound"], int(nxt["TyreLife"]), stint_lap, nxt["TrackStatus"], stint=nxt["Stint"]
        )
    contexts_live = [built[(d, lap)] for d, lap in zip(ctx["Driver"], ctx["lap"], strict=True)]
    np.testing.assert_array_equal(F.matrix(contexts_live, vocab), batch)


def test_compound_and_status_validation() -> None:
    assert F.compound_name("soft") == "SOFT" and F.compound_name("I") == "INTERMEDIATE"
    assert F.compound_name(None) == "UNKNOWN" and math.isnan(F.compound_code(None))
    with pytest.raises(ValueError, match="unknown compound"):
        F.compound_name("HYPERSOFT")
    assert F.status_code("1") == F.STATUS_GREEN and F.status_code("GREEN") == F.STATUS_GREEN
    assert F.status_code("24") == F.STATUS_SC and F.status_code("267") == F.STATUS_VSC
    assert F.status_code("VSC_ENDING") == F.STATUS_VSC and F.status_code("RED") == F.STATUS_RED
    with pytest.raises(ValueError, match="unknown track status"):
        F.status_code("PURPLE")


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("2021 Bahrain Grand Prix", "bahrain"),
        ("Bahrain Grand Prix", "bahrain"),
        ("Sakhir", "bahrain"),
        ("Bahrain International Circuit", "bahrain"),
        ("bahrain", "bahrain"),
        ("Interlagos", "interlagos"),
        ("São Paulo Grand Prix", "interlagos"),
        ("SAO PAULO grand-prix", "interlagos"),
        ("Austin", "americas"),
        ("Styrian Grand Prix", "red_bull_ring"),
        ("70th Anniversary Grand Prix", "silverstone"),
        ("Silverstone", "silverstone"),
        ("Albert Park Grand Prix Circuit", "albert_park"),
        ("2019 German Grand Prix", "hockenheimring"),
        ("Racewire Park", None),
        ("", None),
        (None, None),
    ],
)
def test_circuit_resolution(name: str | None, key: str | None) -> None:
    assert circuits.resolve(name) == key


def test_event_names_resolve_by_year() -> None:
    assert circuits.resolve("Portuguese Grand Prix", year=2021) == "portimao"
    assert circuits.resolve("2020 Sakhir Grand Prix") == "bahrain"
