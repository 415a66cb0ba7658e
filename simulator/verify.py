"""``racewire verify``: compare a replay report with official results, check by check.

Official results come from a race's ``results.json`` (classification, fastest lap, pit stops)
and/or the Ergast tables (``--ergast DIR``: ``results.csv``, ``pit_stops.csv``, ``drivers.csv``,
``status.csv``, ``races.csv`` and, where present, ``lap_times_race_<raceId>.csv``), picked by the
results' race id or ``--year/--round``. The official lap chart (position of each car at the end
of each lap) comes from Ergast lap times (``--lap-times`` or the dump) or, for races whose lap
chart Ergast does not have here, from a lap table's ``position``/``Position`` column
(``--laps-table``, the same table the replay read; FastF1 takes it from the official feed).

Checks (each prints ``PASS``/``FAIL`` with the differences explained):

- ``lap-order``: the report's order at the timing line per lap vs the official lap chart,
  as a match rate over driver-laps;
- ``classification``: order, laps, finished/retired, with each difference explained (a
  post-race penalty or disqualification, a classified retirement, ...);
- ``fastest-lap``: driver, lap and time;
- ``pit-stops``: every official stop found and no extra one (red-flag stays in the pit lane,
  which Ergast records as stops of many minutes, are excluded).

Exit code 0 only if every check that could run passed.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RED_FLAG_STAY_MS = 600_000
"""An official 'pit stop' longer than this (10 min) is a red-flag stay in the pit lane."""


@dataclass(slots=True)
class Official:
    """Official facts about one race (whatever of them is known)."""

    classification: list[dict[str, Any]] = field(default_factory=list)  # position, driver, laps, status
    fastest_lap: dict[str, Any] | None = None  # driver, lap, lap_time_ms
    pit_stops: list[dict[str, Any]] = field(default_factory=list)  # driver, lap, duration_ms
    lap_chart: dict[int, list[str]] = field(default_factory=dict)  # lap → codes by position


@dataclass(slots=True)
class Check:
    name: str
    passed: bool
    summary: str
    details: list[str] = field(default_factory=list)
    rate: float | None = None

    def lines(self, limit: int = 25) -> list[str]:
        out = [f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.summary}"]
        out += [f"    {d}" for d in self.details[:limit]]
        if len(self.details) > limit:
            out.append(f"    ... and {len(self.details) - limit} more")
        return out


# ------------------------------------------------------------------------------ checks (pure)


def check_lap_order(report: dict[str, Any], chart: dict[int, list[str]], min_rate: float = 1.0) -> Check:
    """Driver-laps where the report's position at the line equals the official one."""
    ours = {int(k): v for k, v in report.get("laps", {}).items()}
    total = matched = 0
    details: list[str] = []
    for lap in sorted(chart):
        official = chart[lap]
        mine = ours.get(lap, [])
        pos = {code: i + 1 for i, code in enumerate(mine)}
        for i, code in enumerate(official):
            total += 1
            if pos.get(code) == i + 1:
                matched += 1
            else:
                got = pos.get(code)
                details.append(f"lap {lap}: {code} official P{i + 1}, report "
                               + (f"P{got}" if got else "absent (lap not completed in the report)"))
        extra = [c for c in mine if c not in official]
        if extra:
            details.append(f"lap {lap}: report has {extra} completing this lap; official chart does not")
    rate = matched / total if total else 0.0
    return Check("lap-order", total > 0 and rate >= min_rate and not any("report has" in d for d in details),
                 f"{matched}/{total} driver-laps match the official lap chart ({100 * rate:.2f}%)",
                 details, rate)


def _category(status: str) -> str:
    s = status.strip().lower()
    if s == "finished" or re.fullmatch(r"\+\d+ laps?", s) or s.startswith("lapped"):
        return "finished"
    if s in ("disqualified", "excluded"):
        return "disqualified"
    return "retired"


def check_classification(report: dict[str, Any], official: list[dict[str, Any]]) -> Check:
    """Order, laps and status category, each difference explained."""
    mine = report.get("classification", [])
    ours_pos = {c["driver"]: c for c in mine}
    details: list[str] = []
    order_ok = [c["driver"] for c in mine] == [c["driver"] for c in official]
    matched = 0
    for off in official:
        code = off["driver"]
        got = ours_pos.get(code)
        if got is None:
            details.append(f"P{off['position']} {code}: not in the report's classification ({off['status']}, "
                           f"{off['laps']} laps): the lap table has no laps of this car (did not start, "
                           "or out before completing a lap)")
            continue
        same_pos = got["position"] == off["position"]
        same_laps = got["laps"] == off["laps"]
        cat_off, cat_ours = _category(off["status"]), _category(got["status"])
        if same_pos:
            matched += 1
        if same_pos and same_laps and cat_off == cat_ours:
            if cat_off == "retired" and off["status"].lower() != got["status"].lower():
                details.append(f"P{off['position']} {code}: classified after retiring "
                               f"({off['status']}, {off['laps']} laps): same place at the line (note)")
            continue
        why: list[str] = []
        dsq_ahead = [o["driver"] for o in official if _category(o["status"]) == "disqualified"
                     and (ours_pos.get(o["driver"], {}).get("position", 99) < got["position"])]
        if cat_off == "disqualified":
            why.append("disqualified after the race (timing alone cannot know)")
        elif not same_laps:
            why.append(f"laps official {off['laps']} vs report {got['laps']}")
        elif cat_off != cat_ours:
            why.append(f"status official '{off['status']}' vs report '{got['status']}'")
        elif not same_pos and dsq_ahead:
            why.append(f"moved up after the disqualification of {', '.join(dsq_ahead)}")
        elif not same_pos:
            why.append("same laps, different order at the line: a post-race time penalty "
                       "(or a ruling) changed the official order")
        details.append(f"{code}: official P{off['position']} ({off['status']}, {off['laps']} laps), "
                       f"report P{got['position']} ({got['status']}, {got['laps']} laps): {'; '.join(why)}")
    extra = [c["driver"] for c in mine if c["driver"] not in {o["driver"] for o in official}]
    if extra:
        details.append(f"report classifies {extra}, officials do not (did not start / excluded)")
    passed = bool(official) and order_ok and not any("not in the report" in d or "vs report" in d for d in details)
    return Check("classification", passed,
                 f"{matched}/{len(official)} positions match the official classification"
                 + ("" if order_ok else " (order differs)"), details,
                 matched / len(official) if official else 0.0)


def check_fastest_lap(report: dict[str, Any], official: dict[str, Any] | None) -> Check:
    fl = report.get("fastest_lap")
    if official is None:
        return Check("fastest-lap", True, f"no official fastest lap to compare (report: {fl})")
    ok = fl is not None and all(fl.get(k) == official[k] for k in ("driver", "lap", "lap_time_ms"))
    return Check("fastest-lap", ok,
                 f"official {official['driver']} lap {official['lap']} {official['lap_time_ms']} ms, "
                 f"report " + (f"{fl['driver']} lap {fl['lap']} {fl['lap_time_ms']} ms" if fl else "none"))


def check_pit_stops(report: dict[str, Any], official: list[dict[str, Any]],
                    drivers: set[str] | None = None) -> Check:
    stays = [p for p in official if (p.get("duration_ms") or 0) > RED_FLAG_STAY_MS]
    real = {(p["driver"], p["lap"]) for p in official if p not in stays}
    if drivers is not None:  # cars the replayed table has (a car with no laps cannot stop)
        real = {p for p in real if p[0] in drivers}
    ours = {(p["driver"], p["lap"]) for p in report.get("pit_stops", [])}
    missing, extra = sorted(real - ours), sorted(ours - real)
    details = [f"missing: {d} in-lap {lap}" for d, lap in missing]
    details += [f"extra: {d} in-lap {lap} (not an official stop)" for d, lap in extra]
    if stays:
        details.append("excluded red-flag stays: " + ", ".join(f"{p['driver']} lap {p['lap']}" for p in stays))
    return Check("pit-stops", not missing and not extra,
                 f"{len(real & ours)}/{len(real)} official stops found, {len(extra)} extra", details,
                 len(real & ours) / len(real) if real else 1.0)


def verify(report: dict[str, Any], official: Official, min_lap_rate: float = 1.0) -> list[Check]:
    checks = []
    if official.lap_chart:
        checks.append(check_lap_order(report, official.lap_chart, min_lap_rate))
    if official.classification:
        checks.append(check_classification(report, official.classification))
    checks.append(check_fastest_lap(report, official.fastest_lap))
    if official.pit_stops:
        drivers = {c["driver"] for c in report.get("classification", [])} or None
        checks.append(check_pit_stops(report, official.pit_stops, drivers))
    return checks


# ------------------------------------------------------------------------------ official sources


def _ms(text: str | None) -> int | None:
    if not text or text == "\\N":
        return None
    parts = text.split(":")
    seconds = float(parts[-1]) + (int(parts[-2]) * 60 if len(parts) > 1 else 0) + (
        int(parts[-3]) * 3600 if len(parts) > 2 else 0)
    return round(seconds * 1000)


def from_results_json(path: Path) -> tuple[Official, int | None]:
    """Official facts from a race's ``results.json``; also its Ergast race id."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    off = Official()
    off.classification = [
        {"position": c["position_order"], "driver": c["driver_code"], "laps": c["laps"], "status": c["status"]}
        for c in sorted(doc.get("classification", []), key=lambda c: c["position_order"])
    ]
    fl = doc.get("fastest_lap")
    if fl:
        off.fastest_lap = {"driver": fl["driver_code"], "lap": fl["lap"], "lap_time_ms": fl["time_ms"]}
    off.pit_stops = [{"driver": p["driver_code"], "lap": p["lap"], "duration_ms": p.get("duration_ms")}
                     for p in doc.get("pit_stops", [])]
    return off, doc.get("race", {}).get("raceId")


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def ergast_race_id(ergast: Path, year: int, round_number: int) -> int:
    for r in _read(ergast / "races.csv"):
        if int(r["year"]) == year and int(r["round"]) == round_number:
            return int(r["raceId"])
    raise ValueError(f"no race {year} round {round_number} in {ergast / 'races.csv'}")


def from_ergast(ergast: Path, race_id: int, sprint: bool = False, lap_times: Path | None = None) -> Official:
    """Official facts of one race from an Ergast dump."""
    codes = {r["driverId"]: r["code"] for r in _read(ergast / "drivers.csv")}
    status = {r["statusId"]: r["status"] for r in _read(ergast / "status.csv")}
    table = "sprint_results.csv" if sprint else "results.csv"
    rows = [r for r in _read(ergast / table) if int(r["raceId"]) == race_id]
    off = Official()
    off.classification = [
        {"position": int(r["positionOrder"]), "driver": codes[r["driverId"]], "laps": int(r["laps"]),
         "status": status.get(r["statusId"], r["statusId"])}
        for r in sorted(rows, key=lambda r: int(r["positionOrder"]))
    ]
    ranked = [r for r in rows if r.get("rank") == "1" and r["fastestLap"] != "\\N"]
    if not ranked:  # sprint results carry no rank: take the lowest time
        timed = [r for r in rows if _ms(r.get("fastestLapTime")) is not None and r["fastestLap"] != "\\N"]
        ranked = sorted(timed, key=lambda r: _ms(r["fastestLapTime"]) or 0)[:1]
    if ranked:
        r = ranked[0]
        off.fastest_lap = {"driver": codes[r["driverId"]], "lap": int(r["fastestLap"]),
                           "lap_time_ms": _ms(r["fastestLapTime"])}
    if not sprint:
        off.pit_stops = [{"driver": codes[p["driverId"]], "lap": int(p["lap"]),
                          "duration_ms": int(p["milliseconds"]) if p["milliseconds"].isdigit() else None}
                         for p in _read(ergast / "pit_stops.csv") if int(p["raceId"]) == race_id]
    chart_file = lap_times or ergast / f"lap_times_race_{race_id}.csv"
    if chart_file.exists():
        off.lap_chart = lap_chart_from_ergast(_read(chart_file), codes, race_id)
    return off


def lap_chart_from_ergast(rows: list[dict[str, str]], codes: dict[str, str],
                          race_id: int | None) -> dict[int, list[str]]:
    by_lap: dict[int, list[tuple[int, str]]] = {}
    for r in rows:
        if race_id is not None and "raceId" in r and int(r["raceId"]) != race_id:
            continue
        by_lap.setdefault(int(r["lap"]), []).append((int(r["position"]), codes[r["driverId"]]))
    return {lap: [c for _p, c in sorted(v)] for lap, v in by_lap.items()}


def lap_chart_from_table(path: Path, round_number: int | None = None) -> dict[int, list[str]]:
    """Official positions per lap from a lap table's position column (tidy or FastF1)."""
    import polars as pl

    frame = pl.read_csv(path, infer_schema_length=0)
    if "Driver" in frame.columns:
        if round_number is not None:
            frame = frame.filter(pl.col("RoundNumber").cast(pl.Float64, strict=False) == round_number)
        frame = frame.with_columns(pl.col("LapNumber").cast(pl.Float64).alias("n"))
        # a car's last row without a lap time, unless it took the flag, is the lap it did not
        # finish (FastF1 may still give it a position): not a completed lap
        winner_laps = frame["n"].max()
        last = pl.col("n") == pl.col("n").max().over("Driver")
        frame = frame.filter(~(last & pl.col("LapTime").is_null() & (pl.col("n") < winner_laps)))
        frame = frame.select(pl.col("Driver").alias("code"), pl.col("LapNumber").alias("lap"),
                             pl.col("Position").alias("position"))
    else:
        frame = frame.select(pl.col("driver_code").alias("code"), "lap", "position")
    frame = frame.with_columns(pl.col("lap").cast(pl.Float64).cast(pl.Int64),
                               pl.col("position").cast(pl.Float64, strict=False).cast(pl.Int64)).drop_nulls()
    by_lap: dict[int, list[tuple[int, str]]] = {}
    for r in frame.to_dicts():
        by_lap.setdefault(r["lap"], []).append((r["position"], r["code"]))
    return {lap: [c for _p, c in sorted(v)] for lap, v in by_lap.items()}


# ------------------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("report", type=Path, help="replay report JSON (racewire replay --output-json)")
    parser.add_argument("--results", type=Path, help="the race's results.json")
    parser.add_argument("--ergast", type=Path, help="Ergast dump folder (results, pit stops, lap times)")
    parser.add_argument("--year", type=int, help="season (with --ergast, when there is no results.json)")
    parser.add_argument("--round", type=int, dest="round_number", help="round (with --ergast / --laps-table)")
    parser.add_argument("--sprint", action="store_true", help="compare with the sprint results")
    parser.add_argument("--lap-times", type=Path, help="Ergast lap_times CSV (the official lap chart)")
    parser.add_argument("--laps-table", type=Path,
                        help="lap table whose position column gives the lap chart (tidy or FastF1)")
    parser.add_argument("--min-lap-match", type=float, default=1.0,
                        help="lap-order passes at this match rate or above (default 1.0: every driver-lap)")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary line")


def load_official(args: argparse.Namespace) -> Official:
    official = Official()
    race_id: int | None = None
    if args.results is not None:
        official, race_id = from_results_json(args.results)
    if args.ergast is not None:
        if race_id is None:
            if args.year is None or args.round_number is None:
                raise SystemExit("racewire verify: --ergast needs --results or --year and --round")
            race_id = ergast_race_id(args.ergast, args.year, args.round_number)
        erg = from_ergast(args.ergast, race_id, args.sprint, args.lap_times)
        official.classification = official.classification or erg.classification
        official.fastest_lap = official.fastest_lap or erg.fastest_lap
        official.pit_stops = official.pit_stops or erg.pit_stops
        official.lap_chart = erg.lap_chart
    if not official.lap_chart and args.laps_table is not None:
        official.lap_chart = lap_chart_from_table(args.laps_table, args.round_number)
    return official


def run(args: argparse.Namespace) -> int:
    report = json.loads(args.report.read_text(encoding="utf-8"))
    official = load_official(args)
    checks = verify(report, official, args.min_lap_match)
    print(f"verify {report.get('race_id')}:")
    for c in checks:
        print("\n".join(c.lines()))
    ok = all(c.passed for c in checks)
    print("ALL PASS" if ok else f"{sum(not c.passed for c in checks)} check(s) FAILED")
    if args.json:
        print(json.dumps({"race_id": report.get("race_id"), "passed": ok,
                          "checks": {c.name: {"passed": c.passed, "rate": c.rate, "summary": c.summary}
                                     for c in checks}}))
    return 0 if ok else 1
