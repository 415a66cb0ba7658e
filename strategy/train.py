"""``racewire train``: fit the strategy models on real lap tables and write versioned artifacts.

``racewire train [--laps PATH...] [--ergast DIR] [--out DIR]``. Defaults: every ``laps_pool``
table (Grands Prix 2018-2021, sprints 2021-2025) and the Ergast tables beside the project, output
the shipped ``strategy/artifacts/``. Progress goes to stderr; the manifest lists the data
(files, rows, races, years, SHA-256), features, hyperparameters and validation metrics.

Models (the methods, in brief; :mod:`strategy.models` uses them):

- **lap time**: LightGBM regression (L1) of ``LapTime - reference_s`` (the car's recent green
  pace, see :mod:`strategy.features`) on green laps; validated on the last year's races held out.
- **degradation**: per (circuit, compound), fuel-corrected green lap time regressed on tyre age
  within stints (stint fixed effects, cluster-robust standard errors by stint); a quadratic term
  is kept only when convex with t > 3 (a cliff). Circuit estimates are shrunk toward the
  compound-wide fit (empirical Bayes, between-circuit variance by method of moments). Compound
  offsets vs MEDIUM: within (race, driver) fixed effects at equal age and fuel, with the race lap
  as a covariate (track evolution), shrunk the same way.
- **safety car**: deployments per race lap, piecewise hazard (lap 1, laps 2-5, later laps)
  times a per-circuit rate ratio shrunk toward 1 (Poisson-gamma). SC and red flags from Ergast
  (``safety_cars.csv``, ``red_flags.csv``, races 2014-2025 with results); VSC from the lap
  tables' ``TrackStatus`` (codes 6/7) joined with ``virtual_safety_car_estimates.json``.
- **pit loss**: (in-lap + out-lap) - 2 x the car's surrounding green pace, median per circuit
  under green, shrunk toward the global median for circuits with few stops; SC and VSC factors
  from stops under them, relative to the field's laps.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from strategy import circuits, data
from strategy import features as F
from strategy.fuel import fuel_s_expr

log = logging.getLogger("racewire.strategy.train")

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SEED = 7
LAP_TIME_PARAMS: dict[str, Any] = {
    "objective": "l1",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "cat_smooth": 20.0,
    "seed": SEED,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
    "verbose": -1,
}
LAP_TIME_ROUNDS = 300
MAX_TARGET_S = 15.0  # training laps further than this from the reference are incidents, not pace
SLICKS = ("SOFT", "MEDIUM", "HARD")
FIRST_ERGAST_YEAR = 2014
MIN_STINTS = 20  # a compound needs this many stints for a compound-wide degradation fit


def progress(message: str) -> None:
    print(f"[train] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# lap time


def lap_time_training_rows(ctx: pl.DataFrame, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask of the training laps (green, with a reference, not an incident) and their targets."""
    y = ctx["LapTime"].cast(pl.Float64).fill_null(float("nan")).to_numpy() - F.reference(x)
    ok = ctx["green"].to_numpy() & np.isfinite(y)
    ok &= np.abs(np.nan_to_num(y, nan=1e9)) < MAX_TARGET_S
    return ok, y


def circuit_vocabulary(ctx: pl.DataFrame) -> dict[str, int]:
    return {c: i for i, c in enumerate(sorted(set(ctx["circuit"].drop_nulls().to_list())))}


def fit_lap_time(ctx: pl.DataFrame, vocabulary: dict[str, int] | None = None) -> tuple[Any, dict[str, int], int]:
    """Train the lap-time booster on a context frame: (booster, circuit vocabulary, rows)."""
    import lightgbm as lgb

    vocab = vocabulary if vocabulary is not None else circuit_vocabulary(ctx)
    x = F.frame_matrix(ctx, vocab)
    mask, y = lap_time_training_rows(ctx, x)
    dataset = lgb.Dataset(
        x[mask], y[mask], feature_name=list(F.FEATURES), categorical_feature=list(F.CATEGORICAL), free_raw_data=True
    )
    booster = lgb.train(LAP_TIME_PARAMS, dataset, num_boost_round=LAP_TIME_ROUNDS)
    return booster, vocab, int(mask.sum())


def evaluate_lap_time(booster: Any, vocab: dict[str, int], ctx: pl.DataFrame) -> dict[str, Any]:
    """MAE of the model and of the baseline (recent pace) on the scored laps of ``ctx``."""
    x = F.frame_matrix(ctx, vocab)
    mask = F.scored_mask(ctx)
    truth = ctx["LapTime"].to_numpy()[mask]
    baseline = F.reference(x)[mask]
    model = baseline + booster.predict(x[mask], num_threads=2)
    mae_model = float(np.mean(np.abs(truth - model))) if mask.any() else math.nan
    mae_base = float(np.mean(np.abs(truth - baseline))) if mask.any() else math.nan
    return {
        "laps": int(mask.sum()),
        "model_mae_s": round(mae_model, 4),
        "baseline_mae_s": round(mae_base, 4),
        "improvement_pct": round(100.0 * (1.0 - mae_model / mae_base), 2) if mask.any() else math.nan,
    }


def status_factors(ctx: pl.DataFrame) -> dict[str, float]:
    """Median lap time under each non-green status relative to the car's recent green pace."""
    df = ctx.filter(
        pl.col("LapTime").is_not_null() & pl.col("recent_s").is_not_null() & ~pl.col("in_lap") & ~pl.col("out_lap")
    ).with_columns((pl.col("LapTime") / pl.col("recent_s")).alias("ratio"))
    out = {"YELLOW": 1.0, "VSC": 1.35, "SC": 1.4, "RED": 1.6}
    for name, status in (("YELLOW", "2"), ("VSC", "6"), ("SC", "4")):
        sub = df.filter(pl.col("track_status_raw") == status)["ratio"]
        if sub.len() >= 50:
            out[name] = round(float(sub.median()), 4)  # type: ignore[arg-type]
    return out


def circuit_lap_s(ctx: pl.DataFrame) -> dict[str, float]:
    """Median green lap (s) per circuit (the anchor when a car has no pace yet), and "*" overall."""
    g = ctx.filter(pl.col("green") & pl.col("circuit").is_not_null())
    per = g.group_by("circuit").agg(pl.col("LapTime").median()).sort("circuit")
    out = {r["circuit"]: round(float(r["LapTime"]), 3) for r in per.iter_rows(named=True)}
    out["*"] = round(float(g["LapTime"].median() or 90.0), 3)  # type: ignore[arg-type]
    return out


# ------------------------------------------------------------------------------------------
# degradation


def _cluster_ols(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OLS coefficients and cluster-robust standard errors (clusters = ``groups``)."""
    xtx_inv = np.linalg.pinv(x.T @ x)
    beta = xtx_inv @ (x.T @ y)
    resid = y - x @ beta
    order = np.argsort(groups, kind="stable")
    g_sorted = groups[order]
    bounds = np.flatnonzero(np.diff(g_sorted)) + 1
    scores = np.add.reduceat(x[order] * resid[order, None], np.r_[0, bounds], axis=0)
    meat = scores.T @ scores
    n_g = len(bounds) + 1
    k = x.shape[1]
    n = len(y)
    corr = (n_g / max(n_g - 1, 1)) * ((n - 1) / max(n - k, 1))
    cov = corr * xtx_inv @ meat @ xtx_inv
    return beta, np.sqrt(np.maximum(np.diag(cov), 0.0))


def _shrink(
    estimates: dict[str, tuple[float, float]], prior: float
) -> tuple[dict[str, tuple[float, float, float]], float]:
    """Empirical Bayes: normal estimates (value, se) shrunk toward ``prior``.
    tau² (between-circuit variance) by the method of moments. → {key: (value, se, weight)}, tau."""
    if not estimates:
        return {}, 0.0
    vals = np.array([v for v, _ in estimates.values()])
    ses = np.array([s for _, s in estimates.values()])
    tau2 = float(np.mean((vals - prior) ** 2) - np.mean(ses**2)) if len(vals) >= 3 else 0.0
    tau2 = max(tau2, 1e-6)
    out = {}
    for key, (v, s) in estimates.items():
        w = tau2 / (tau2 + s * s) if s > 0 else 1.0
        out[key] = (prior + w * (v - prior), math.sqrt(w) * s if s > 0 else math.sqrt(tau2), w)
    return out, math.sqrt(tau2)


def degradation_rows(ctx: pl.DataFrame) -> pl.DataFrame:
    """Green laps with fuel-corrected times, cleaned of outliers, in stints of ≥ 5 such laps."""
    stint = ["race", "Driver", "Stint"]
    return (
        ctx.filter(pl.col("green") & pl.col("circuit").is_not_null())
        .with_columns(
            (
                pl.col("LapTime") - fuel_s_expr("lap", "total_laps")
            ).alias("y"),
        )
        .filter((pl.col("y") - pl.col("y").median().over(stint)).abs() < 2.5)
        .filter(pl.len().over(stint) >= 5)
        .with_columns(
            (pl.col("race") + "|" + pl.col("Driver") + "|" + pl.col("Stint").cast(pl.Utf8)).alias("stint_key"),
            (pl.col("race") + "|" + pl.col("Driver")).alias("car_key"),
        )
    )


def _demeaned(df: pl.DataFrame, group: str, cols: Sequence[str]) -> np.ndarray:
    return df.select([(pl.col(c) - pl.col(c).mean().over(group)).alias(c) for c in cols]).to_numpy()


def _fit_deg(df: pl.DataFrame) -> dict[str, float] | None:
    if df.height < 30 or df["stint_key"].n_unique() < 3:
        return None
    d = df.with_columns(pl.col("tyre_age").alias("a1"), (pl.col("tyre_age") ** 2).alias("a2"))
    m = _demeaned(d, "stint_key", ["y", "a1", "a2"])
    codes = d["stint_key"].cast(pl.Categorical).to_physical().to_numpy()
    beta2, se2 = _cluster_ols(m[:, 1:3], m[:, 0], codes)
    # a quadratic (cliff) term only when convex and clearly supported
    if d.height >= 200 and se2[1] > 0 and beta2[1] / se2[1] > 3.0:
        lin, quad, se = float(beta2[0]), float(beta2[1]), float(se2[0])
    else:
        beta1, se1 = _cluster_ols(m[:, 1:2], m[:, 0], codes)
        lin, quad, se = float(beta1[0]), 0.0, float(se1[0])
    return {
        "linear": lin,
        "quadratic": quad,
        "stderr": max(se, 1e-4),
        "laps": d.height,
        "stints": d["stint_key"].n_unique(),
    }


def _fit_offsets(df: pl.DataFrame, deg: dict[str, dict[str, float]]) -> dict[str, tuple[float, float]] | None:
    """SOFT and HARD vs MEDIUM at equal age and fuel, within (race, driver)."""
    d = df.filter(pl.col("Compound").is_in(SLICKS)).filter(pl.col("Compound").n_unique().over("car_key") >= 2)
    if d.height < 50:
        return None
    lin = {c: deg.get(c, {}).get("linear", 0.0) for c in SLICKS}
    quad = {c: deg.get(c, {}).get("quadratic", 0.0) for c in SLICKS}
    d = d.with_columns(
        (
            pl.col("y")
            - pl.col("Compound").replace_strict(lin, return_dtype=pl.Float64) * pl.col("tyre_age")
            - pl.col("Compound").replace_strict(quad, return_dtype=pl.Float64) * pl.col("tyre_age") ** 2
        ).alias("r"),
        (pl.col("Compound") == "SOFT").cast(pl.Float64).alias("soft"),
        (pl.col("Compound") == "HARD").cast(pl.Float64).alias("hard"),
    )
    # the race lap absorbs track evolution (compounds are used at different phases of a race)
    m = _demeaned(d, "car_key", ["r", "soft", "hard", "lap"])
    codes = d["car_key"].cast(pl.Categorical).to_physical().to_numpy()
    keep = [i for i, c in enumerate(("soft", "hard")) if np.any(m[:, 1 + i] != 0)]
    if not keep:
        return None
    beta, se = _cluster_ols(m[:, [1 + i for i in keep] + [3]], m[:, 0], codes)
    out = {}
    for j, i in enumerate(keep):
        out[("SOFT", "HARD")[i]] = (float(beta[j]), max(float(se[j]), 1e-3))
    return out


def fit_degradation(ctx: pl.DataFrame) -> dict[str, Any]:
    rows = degradation_rows(ctx)
    compounds = [c for c in F.COMPOUNDS if rows.filter(pl.col("Compound") == c)["stint_key"].n_unique() >= MIN_STINTS]
    global_fit: dict[str, dict[str, float]] = {}
    per: dict[str, dict[str, dict[str, float]]] = {}
    for comp in compounds:
        sub = rows.filter(pl.col("Compound") == comp)
        g = _fit_deg(sub)
        if g is None:
            continue
        global_fit[comp] = g
        for (circ,), part in sub.partition_by("circuit", as_dict=True).items():
            fit = _fit_deg(part)
            if fit is not None:
                per.setdefault(comp, {})[str(circ)] = fit
    out_comp: dict[str, Any] = {}
    circuits_out: dict[str, dict[str, Any]] = {}
    for comp, g in global_fit.items():
        shrunk, tau = _shrink({c: (f["linear"], f["stderr"]) for c, f in per.get(comp, {}).items()}, g["linear"])
        out_comp[comp] = {
            "linear_s_per_lap": round(g["linear"], 5),
            "quadratic_s_per_lap2": round(g["quadratic"], 6),
            "stderr_s_per_lap": round(g["stderr"], 5),
            "tau_s_per_lap": round(tau, 5),
            "laps": int(g["laps"]),
            "stints": int(g["stints"]),
        }
        for circ, (v, s, w) in shrunk.items():
            f = per[comp][circ]
            quad = g["quadratic"] + w * (f["quadratic"] - g["quadratic"])
            circuits_out.setdefault(circ, {})[comp] = {
                "linear_s_per_lap": round(v, 5),
                "quadratic_s_per_lap2": round(quad, 6),
                "stderr_s_per_lap": round(s, 5),
                "raw_linear_s_per_lap": round(f["linear"], 5),
                "weight": round(w, 3),
                "laps": int(f["laps"]),
            }
    # compound offsets vs MEDIUM
    glob_off = _fit_offsets(rows, global_fit) or {}
    for comp, (v, s) in glob_off.items():
        out_comp.setdefault(comp, {})["offset_s"] = round(v, 4)
        out_comp[comp]["offset_stderr_s"] = round(s, 4)
    if "MEDIUM" in out_comp:
        out_comp["MEDIUM"]["offset_s"] = 0.0
    per_off: dict[str, dict[str, tuple[float, float]]] = {}
    for (circ,), part in rows.partition_by("circuit", as_dict=True).items():
        off_fit = _fit_offsets(part, global_fit)
        for comp, est in (off_fit or {}).items():
            per_off.setdefault(comp, {})[str(circ)] = est
    for comp, ests in per_off.items():
        shrunk_off, _ = _shrink(ests, glob_off.get(comp, (0.0, 0.0))[0])
        for circ, (v, _s, _w) in shrunk_off.items():
            circuits_out.setdefault(circ, {}).setdefault(comp, {})["offset_s"] = round(v, 4)
    return {
        "method": "within-stint OLS of fuel-corrected green lap time on tyre age (cluster-robust SE), "
        "convex quadratic kept when t>3, empirical-Bayes shrinkage toward the compound-wide fit; offsets vs MEDIUM "
        "within (race, driver) at equal age and fuel",
        "fuel": {"start_kg": F.START_FUEL_KG, "s_per_kg": F.FUEL_S_PER_KG},
        "compounds": out_comp,
        "circuits": dict(sorted(circuits_out.items())),
        "laps": rows.height,
    }


# ------------------------------------------------------------------------------------------
# safety car / VSC / red flag


def _lap_bucket(lap: np.ndarray) -> np.ndarray:
    return np.where(lap <= 1, 0, np.where(lap <= 5, 1, 2))


BUCKETS = ("lap1", "laps2_5", "later")


def _hazard(races: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Piecewise-constant hazard per lap bucket, per-circuit ratio shrunk toward 1 (Poisson-gamma)."""
    exposure = np.zeros(3)
    counts = np.zeros(3)
    for r in races:
        laps = r["laps"]
        exposure += [1, max(min(laps, 5) - 1, 0), max(laps - 5, 0)]
        for lap in r[key]:
            counts[_lap_bucket(np.array([lap]))[0]] += 1
    rates = counts / np.maximum(exposure, 1)
    per_circuit: dict[str, list[float]] = {}
    for r in races:
        laps = r["laps"]
        expected = rates @ np.array([1, max(min(laps, 5) - 1, 0), max(laps - 5, 0)])
        acc = per_circuit.setdefault(r["circuit"], [0.0, 0.0, 0.0])
        acc[0] += len(r[key])
        acc[1] += expected
        acc[2] += 1
    ratios = np.array([k / e for k, e, _ in per_circuit.values() if e > 0])
    inv_exp = np.array([1 / e for k, e, _ in per_circuit.values() if e > 0])
    # method of moments: Var(k/e) = 1/e (Poisson) + 1/kappa (gamma with mean 1, shape kappa)
    excess = float(np.var(ratios) - np.mean(inv_exp)) if len(ratios) >= 3 else 0.0
    kappa = float(np.clip(1.0 / excess, 1.0, 50.0)) if excess > 0 else 50.0
    circ_out = {
        c: {"ratio": round((k + kappa) / (e + kappa), 4), "events": int(k), "races": int(n)}
        for c, (k, e, n) in sorted(per_circuit.items())
    }
    return {
        "rates_per_lap": {b: round(float(v), 6) for b, v in zip(BUCKETS, rates, strict=True)},
        "events": {b: int(v) for b, v in zip(BUCKETS, counts, strict=True)},
        "exposure_laps": {b: int(v) for b, v in zip(BUCKETS, exposure, strict=True)},
        "prior_strength": round(kappa, 3),
        "circuits": circ_out,
    }


def _ergast_races(ergast: Path) -> dict[str, dict[str, Any]]:
    """'2021 Bahrain Grand Prix' → {circuit, laps} for races from 2014 that have results."""
    with open(ergast / "circuits.csv", newline="", encoding="utf-8") as f:
        refs = {r["circuitId"]: r["circuitRef"] for r in csv.DictReader(f)}
    laps: dict[str, int] = {}
    with open(ergast / "results.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            try:
                laps[r["raceId"]] = max(laps.get(r["raceId"], 0), int(r["laps"]))
            except ValueError:
                continue
    out = {}
    with open(ergast / "races.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if int(r["year"]) >= FIRST_ERGAST_YEAR and laps.get(r["raceId"], 0) > 0:
                out[f"{r['year']} {r['name']}"] = {
                    "circuit": refs[r["circuitId"]],
                    "laps": laps[r["raceId"]],
                    "year": int(r["year"]),
                }
    return out


def _first_laps(laps: Sequence[int]) -> list[int]:
    """Start laps of runs of consecutive laps."""
    s = sorted(set(laps))
    return [lap for i, lap in enumerate(s) if i == 0 or s[i - 1] != lap - 1]


def fit_safety_car(laps: pl.DataFrame, ergast: Path) -> dict[str, Any]:
    races = _ergast_races(ergast)
    sc: dict[str, list[int]] = {}
    with open(ergast / "safety_cars.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["Race"] in races:
                try:
                    sc.setdefault(r["Race"], []).append(int(float(r["Deployed"])))
                except ValueError:
                    continue
    red: dict[str, list[int]] = {}
    with open(ergast / "red_flags.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["Race"] in races:
                try:
                    red.setdefault(r["Race"], []).append(int(float(r["Lap"])))
                except ValueError:
                    continue
    ergast_races = [
        {"circuit": v["circuit"], "laps": v["laps"], "sc": sc.get(k, []), "red": red.get(k, [])}
        for k, v in races.items()
    ]
    # VSC: lap tables (complete races) + the Ergast-format VSC estimates for the same races
    try:
        estimates: dict[str, list[int]] = json.loads((ergast / "virtual_safety_car_estimates.json").read_text())
    except (OSError, ValueError):
        estimates = {}
    vsc_laps = (
        laps.filter(pl.col("circuit").is_not_null())
        .group_by("race")
        .agg(
            pl.col("circuit").first(),
            pl.col("year").first(),
            pl.col("EventName").first(),
            pl.col("kind").first(),
            pl.col("LapNumber").max().alias("laps"),
            pl.col("LapNumber").filter(pl.col("TrackStatus").str.contains("[67]")).unique().alias("vsc"),
        )
        .sort("race")
    )
    vsc_races = []
    for r in vsc_laps.iter_rows(named=True):
        extra = estimates.get(f"{r['year']} {r['EventName']}", []) if r["kind"] == "grand_prix" else []
        vsc_races.append({"circuit": r["circuit"], "laps": int(r["laps"]), "vsc": _first_laps([*r["vsc"], *extra])})
    years = sorted({v["year"] for v in races.values()})
    vsc_years = [int(y) for y in vsc_laps["year"].to_list()]
    return {
        "method": "piecewise hazard per lap (lap 1, laps 2-5, later) x per-circuit ratio shrunk toward 1 "
        "(Poisson-gamma, prior strength by method of moments); P(lap) = 1 - exp(-rate x ratio)",
        "sources": {
            "sc": f"Ergast safety_cars.csv, {len(ergast_races)} races {years[0]}-{years[-1]}",
            "red": f"Ergast red_flags.csv, {len(ergast_races)} races {years[0]}-{years[-1]}",
            "vsc": f"lap tables TrackStatus 6/7 + virtual_safety_car_estimates.json, {len(vsc_races)} races "
            f"{min(vsc_years, default=0)}-{max(vsc_years, default=0)}",
        },
        "sc": _hazard(ergast_races, "sc"),
        "red": _hazard(ergast_races, "red"),
        "vsc": _hazard(vsc_races, "vsc"),
    }


# ------------------------------------------------------------------------------------------
# pit loss


DEFAULT_SC_FACTOR = 0.5
DEFAULT_VSC_FACTOR = 0.7
MIN_FACTOR_STOPS = 30  # fewer stops under SC/VSC than this: the documented default factor


def fit_pit_loss(ctx: pl.DataFrame) -> dict[str, Any]:
    keys = ["race", "Driver"]
    base = ctx.select(*keys, "circuit", "lap", "LapTime", "green", "in_lap", "out_lap", "track_status_raw")
    outs = base.select(
        *keys,
        (pl.col("lap") - 1).alias("lap"),
        pl.col("LapTime").alias("out_time"),
        pl.col("out_lap").alias("is_out"),
        pl.col("track_status_raw").alias("out_status"),
    )
    stops = (
        base.filter(pl.col("in_lap") & pl.col("LapTime").is_not_null() & pl.col("circuit").is_not_null())
        .join(outs, on=[*keys, "lap"], how="inner")
        .filter(pl.col("is_out") & pl.col("out_time").is_not_null())
    )
    # the car's green pace around the stop: up to 3 green laps before and 3 after
    greens = base.filter(pl.col("green")).select(*keys, pl.col("lap").alias("g_lap"), pl.col("LapTime").alias("g_time"))
    around = (
        stops.select(*keys, "lap")
        .join(greens, on=keys)
        .filter(
            ((pl.col("g_lap") < pl.col("lap")) & (pl.col("g_lap") >= pl.col("lap") - 3))
            | ((pl.col("g_lap") > pl.col("lap") + 1) & (pl.col("g_lap") <= pl.col("lap") + 4))
        )
        .group_by(*keys, "lap")
        .agg(pl.col("g_time").median().alias("own_pace"), pl.len().alias("n_pace"))
    )
    # the field's laps on the same lap numbers (cars not stopping), for SC / VSC stops
    field = (
        base.filter(~pl.col("in_lap") & ~pl.col("out_lap") & pl.col("LapTime").is_not_null())
        .group_by("race", "lap")
        .agg(pl.col("LapTime").median().alias("field_lap"))
    )
    stops = (
        stops.join(around, on=[*keys, "lap"], how="left")
        .join(field, on=["race", "lap"], how="left")
        .join(
            field.select("race", (pl.col("lap") - 1).alias("lap"), pl.col("field_lap").alias("field_next")),
            on=["race", "lap"],
            how="left",
        )
        .with_columns(
            (pl.col("LapTime") + pl.col("out_time") - 2 * pl.col("own_pace")).alias("loss_green"),
            (pl.col("LapTime") + pl.col("out_time") - pl.col("field_lap") - pl.col("field_next")).alias("loss_field"),
        )
    )
    green_stops = stops.filter(
        (pl.col("track_status_raw") == "1")
        & (pl.col("out_status") == "1")
        & (pl.col("n_pace") >= 2)
        & pl.col("loss_green").is_between(5.0, 60.0)
    )
    glob = float(green_stops["loss_green"].median() or 22.0)  # type: ignore[arg-type]
    per = (
        green_stops.group_by("circuit")
        .agg(pl.col("loss_green").median().alias("median"), pl.len().alias("n"))
        .sort("circuit")
    )
    prior_n = 3.0
    circ: dict[str, dict[str, Any]] = {}
    for r in per.iter_rows(named=True):
        shrunk = (r["n"] * r["median"] + prior_n * glob) / (r["n"] + prior_n)
        circ[r["circuit"]] = {"green_s": round(shrunk, 3), "raw_median_s": round(r["median"], 3), "stops": int(r["n"])}

    def factor(status_pattern: str, default: float) -> tuple[float, int, str]:
        # both laps entirely under the neutralisation; relative to the field's laps
        sub = stops.filter(
            pl.col("track_status_raw").str.contains(status_pattern)
            & pl.col("out_status").str.contains(status_pattern)
            & pl.col("loss_field").is_not_null()
        )
        sub = (
            sub.with_columns(
                pl.col("circuit")
                .replace_strict({c: v["green_s"] for c, v in circ.items()}, default=glob, return_dtype=pl.Float64)
                .alias("green_ref")
            )
            .with_columns((pl.col("loss_field") / pl.col("green_ref")).alias("f"))
            .filter(pl.col("f").is_between(0.0, 1.5))
        )
        if sub.height >= MIN_FACTOR_STOPS:
            return round(float(sub["f"].median()), 3), sub.height, "estimated"  # type: ignore[arg-type]
        return default, sub.height, "default"

    sc_f, sc_n, sc_how = factor("^4$", DEFAULT_SC_FACTOR)
    vsc_f, vsc_n, vsc_how = factor("^[67]+$", DEFAULT_VSC_FACTOR)
    return {
        "method": "(in-lap + out-lap) - 2 x median of the car's green laps within 3 laps before/after, "
        "median per circuit of green stops (5-60 s), shrunk toward the global median with a prior of 3 stops; "
        "SC/VSC factor = median over stops with in- and out-lap entirely under SC (VSC) of (in+out - the field's "
        "median laps) / circuit green loss, when >= 30 such stops, else the default (SC 0.5, VSC 0.7)",
        "global_green_s": round(glob, 3),
        "stops": green_stops.height,
        "sc_factor": sc_f,
        "sc_factor_stops": sc_n,
        "sc_factor_source": sc_how,
        "vsc_factor": vsc_f,
        "vsc_factor_stops": vsc_n,
        "vsc_factor_source": vsc_how,
        "circuits": circ,
    }


# ------------------------------------------------------------------------------------------
# command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--laps",
        nargs="+",
        type=Path,
        default=None,
        help="lap tables (laps_pool format); default: every laps_pool table beside the project",
    )
    parser.add_argument("--ergast", type=Path, default=data.ERGAST, help="Ergast tables directory")
    parser.add_argument("--out", type=Path, default=ARTIFACTS, help="artifact directory (default: the shipped one)")


def default_laps() -> list[Path]:
    return data.pool_files("grand_prix") + data.pool_files("sprint")


def train(laps_paths: Sequence[Path], ergast: Path, out: Path) -> dict[str, Any]:
    import lightgbm as lgb

    started = time.perf_counter()
    if not laps_paths:
        raise SystemExit("no lap tables: pass --laps PATH... (laps_pool format) or provide ../shared/data")
    for p in [*laps_paths, ergast]:
        if not Path(p).exists():
            raise SystemExit(f"{p} not found: pass --laps / --ergast pointing at the data")
    out.mkdir(parents=True, exist_ok=True)
    progress(f"circuit table from {ergast.name}/races.csv, circuits.csv")
    table = circuits.build_table(ergast)
    circuits.write_table(table, out / "circuits.json")
    if out.resolve() == ARTIFACTS.resolve():
        circuits.reload()

    progress(f"loading {len(laps_paths)} lap tables")
    files = []
    frames = []
    for p in laps_paths:
        df = data.read_one(p)
        frames.append(df)
        files.append(
            {
                "file": Path(p).name,
                "rows": df.height,
                "races": df["race"].n_unique(),
                "year": int(df["year"][0]) if df.height else None,
                "sha256": data.file_digest([p]),
            }
        )
    laps = pl.concat(frames).sort("race", "Driver", "LapNumber")
    digest = data.file_digest(laps_paths)
    progress(f"{laps.height} laps, {laps['race'].n_unique()} races; building features")
    ctx = F.context_frame(laps)

    # lap time: validate on the last year's Grands Prix held out, then fit on everything
    gp_years = sorted(set(ctx.filter(pl.col("kind") == "grand_prix")["year"].to_list()))
    metrics: dict[str, Any] = {}
    if len(gp_years) >= 2:
        hold = gp_years[-1]
        is_test = (pl.col("kind") == "grand_prix") & (pl.col("year") == hold)
        progress(f"lap-time model: validation fit (held out: Grands Prix {hold})")
        tr_ctx = ctx.filter(~is_test & (pl.col("year") < hold))
        booster, vocab, rows = fit_lap_time(tr_ctx)
        metrics = evaluate_lap_time(booster, vocab, ctx.filter(is_test))
        metrics["validation"] = f"trained on races before {hold}, tested on the {hold} Grands Prix"
        progress(f"  validation MAE {metrics['model_mae_s']} s vs baseline {metrics['baseline_mae_s']} s")
    progress("lap-time model: final fit on all laps")
    booster, vocab, rows = fit_lap_time(ctx)
    model_text = booster.model_to_string(num_iteration=-1)
    with gzip.open(out / "lap_time.txt.gz", "wt", encoding="utf-8", compresslevel=9) as f:
        f.write(model_text)
    # gzip's header carries a timestamp; keep the file identical for identical models
    raw = (out / "lap_time.txt.gz").read_bytes()
    (out / "lap_time.txt.gz").write_bytes(raw[:4] + b"\x00\x00\x00\x00" + raw[8:])
    lap_meta = {
        "features": list(F.FEATURES),
        "categorical": list(F.CATEGORICAL),
        "circuits": vocab,
        "status_factors": status_factors(ctx),
        "circuit_lap_s": circuit_lap_s(ctx),
        "training_rows": rows,
    }
    _write_json(out / "lap_time.json", lap_meta)

    progress("degradation model")
    deg = fit_degradation(ctx)
    _write_json(out / "degradation.json", deg)
    progress("safety-car model")
    sc = fit_safety_car(laps, ergast)
    _write_json(out / "safety_car.json", sc)
    progress("pit-loss model")
    pit = fit_pit_loss(ctx)
    _write_json(out / "pit_loss.json", pit)

    trained_at = datetime.now(UTC)
    version = f"{trained_at:%Y.%m.%d}+{digest[:8]}"
    summary = data.summary(laps)
    training_data = {"files": files, "sha256": digest, **summary}
    manifest = {
        "version": version,
        "trained_at": trained_at.isoformat(timespec="seconds"),
        "training_data": training_data,
        "models": {
            "lap_time": {
                "files": ["lap_time.txt.gz", "lap_time.json"],
                "kind": f"lightgbm {lgb.__version__}",
                "target": "LapTime - reference_s (recent green pace in the stint, else driver/field pace)",
                "features": list(F.FEATURES),
                "hyperparameters": {**LAP_TIME_PARAMS, "num_boost_round": LAP_TIME_ROUNDS},
                "training_rows": rows,
                "metrics": metrics,
            },
            "degradation": {
                "files": ["degradation.json"],
                "kind": "empirical-Bayes within-stint regression",
                "features": ["tyre_age", "compound", "circuit", "fuel"],
                "metrics": {
                    "laps": deg["laps"],
                    **{
                        f"{c}_linear_s_per_lap": v["linear_s_per_lap"]
                        for c, v in deg["compounds"].items()
                        if "linear_s_per_lap" in v
                    },
                },
            },
            "safety_car": {
                "files": ["safety_car.json"],
                "kind": "piecewise hazard, Poisson-gamma circuit ratios",
                "features": ["circuit", "lap"],
                "sources": sc["sources"],
                "metrics": {k: sc[k]["rates_per_lap"] for k in ("sc", "vsc", "red")},
            },
            "pit_loss": {
                "files": ["pit_loss.json"],
                "kind": "median per circuit, shrunk",
                "features": ["circuit", "track status"],
                "metrics": {
                    "stops": pit["stops"],
                    "global_green_s": pit["global_green_s"],
                    "sc_factor": pit["sc_factor"],
                    "vsc_factor": pit["vsc_factor"],
                },
            },
            "circuits": {"files": ["circuits.json"], "kind": "lookup table", "attribution": circuits.ATTRIBUTION},
        },
        "training_seconds": round(time.perf_counter() - started, 1),
    }
    _write_json(out / "manifest.json", manifest)
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    progress(f"wrote {out.name}/ ({size / 1024:.0f} KiB), version {version}, {manifest['training_seconds']} s")
    return manifest


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    manifest = train(args.laps or default_laps(), args.ergast, args.out)
    print(
        json.dumps(
            {
                "version": manifest["version"],
                "training_seconds": manifest["training_seconds"],
                "lap_time_metrics": manifest["models"]["lap_time"]["metrics"],
            },
            indent=2,
        )
    )
    return 0
