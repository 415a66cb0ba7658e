"""The lap feature pipeline: one definition for training, evaluation and live prediction.

A lap ``n`` of a car is described by a :class:`LapContext`: only what is known before lap ``n``
ends. Two paths build contexts, and one function turns them into the model's matrix:

- batch: :func:`context_frame` (polars) computes the context columns for every lap of a lap
  table loaded by :mod:`strategy.data`;
- live: :class:`LiveRace` keeps a race's completed laps (pure Python) and builds a
  :class:`LapContext` for a car's next lap; the dataflow may also fill a context itself;
- both end in :func:`matrix` (numpy), so the derived features are defined once.
  ``tests/unit/test_strategy_features.py`` checks that both paths give identical matrices.

Definitions (used everywhere, including ``racewire evaluate``):

- **green lap**: a *representative* lap as :mod:`strategy.representative` defines it (``TrackStatus``
  exactly ``"1"``, ``"GREEN"`` live, a lap time, neither in- nor out-lap, not lap 1); the model
  was trained on these laps, and every live user of the rule imports the same module.
- **recent pace**: the median of the car's previous (up to) three green laps in the current stint;
  the lap-time model predicts a correction to it (the baseline of ``racewire evaluate``).
- **driver / team / field pace**: median of the green laps completed, in this race, before the lap
  starts (i.e. at or before the car crossed the line to end its previous lap) by the car / by the
  team's cars / by all cars. Seconds, absolute; the model uses them relative to the field.
- **position / gap ahead**: the car's rank among the cars that completed the previous lap, by the
  time they crossed the line (session ``Time``), and the time since the car ranked just ahead
  crossed the line on that lap (the interval; ``None`` for the leader). Traffic.
- **fuel**: :mod:`strategy.fuel` (110 kg at the start, burnt evenly over the race distance,
  0.03 s per kg): ``fuel_s`` is the time cost of the fuel on board when the lap starts.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import numpy as np
import polars as pl

from strategy import representative
from strategy.fuel import FUEL_S_PER_KG, START_FUEL_KG, fuel_s, fuel_s_array, fuel_s_per_lap
from strategy.representative import is_green_status
from strategy.representative import is_representative as is_green_lap

__all__ = ["FUEL_S_PER_KG", "START_FUEL_KG", "fuel_s", "fuel_s_per_lap", "is_green_lap", "is_green_status"]

GAP_CAP_S = 60.0

COMPOUNDS = ("SOFT", "MEDIUM", "HARD", "INTERMEDIATE", "WET")
_COMPOUND_ALIASES = {
    "S": "SOFT",
    "M": "MEDIUM",
    "H": "HARD",
    "I": "INTERMEDIATE",
    "INTER": "INTERMEDIATE",
    "W": "WET",
    "UNKNOWN": "UNKNOWN",
    "TEST_UNKNOWN": "UNKNOWN",
    "NONE": "UNKNOWN",
    "": "UNKNOWN",
}
# Track status codes of the feed; a lap's status is the most severe status seen during it.
STATUS_GREEN, STATUS_YELLOW, STATUS_VSC, STATUS_SC, STATUS_RED = 0, 1, 2, 3, 4
_STATUS_NAMES = {
    "GREEN": STATUS_GREEN,
    "YELLOW": STATUS_YELLOW,
    "VSC": STATUS_VSC,
    "VSC_ENDING": STATUS_VSC,
    "SC": STATUS_SC,
    "SAFETY_CAR": STATUS_SC,
    "RED": STATUS_RED,
}

FEATURES: tuple[str, ...] = (
    "circuit",  # categorical: index in the model's circuit vocabulary (unknown: missing)
    "compound",  # categorical: index in COMPOUNDS (unknown: missing)
    "lap",
    "total_laps",
    "race_progress",  # (lap - 1) / total_laps
    "fuel_s",  # time cost of the fuel on board at the start of the lap
    "tyre_age",
    "stint_lap",
    "track_status",
    "prev_track_status",
    "position",
    "gap_ahead_s",
    "reference_s",  # recent pace, else driver pace, else field pace (the prediction's anchor)
    "reference_kind",  # 0 recent (3 laps), 1 recent (1-2 laps), 2 driver pace, 3 field pace
    "last_minus_recent_s",  # trend: the last green lap vs the recent pace
    "recent_minus_field_s",
    "driver_rel_s",  # driver pace - field pace
    "team_rel_s",  # team pace - field pace
)
CATEGORICAL: tuple[str, ...] = ("circuit", "compound")
_IDX = {name: i for i, name in enumerate(FEATURES)}


def compound_name(compound: str | None) -> str:
    """Canonical compound name; ``None``/unknown markers → ``"UNKNOWN"``. Raises on nonsense."""
    if compound is None:
        return "UNKNOWN"
    c = compound.strip().upper()
    if c in COMPOUNDS:
        return c
    if c in _COMPOUND_ALIASES:
        return _COMPOUND_ALIASES[c]
    raise ValueError(f"unknown compound {compound!r}: expected one of {', '.join(COMPOUNDS)} (or UNKNOWN)")


def compound_code(compound: str | None) -> float:
    name = compound_name(compound)
    return float(COMPOUNDS.index(name)) if name in COMPOUNDS else math.nan


def status_code(status: str | None) -> int:
    """Most severe status in a lap: feed digits (``"1"``, ``"24"``, ``"267"``) or names
    (``"GREEN"``, ``"VSC"``, ``"SC,GREEN"``). 0 green, 1 yellow, 2 VSC, 3 SC, 4 red."""
    if not status:
        return STATUS_GREEN
    s = status.strip().upper()
    code = STATUS_GREEN
    for token in s.replace("+", ",").replace(" ", ",").split(","):
        if token in _STATUS_NAMES:
            code = max(code, _STATUS_NAMES[token])
        elif token.isdigit():
            code = max(code, _digits_code(token))
        elif token:
            raise ValueError(f"unknown track status {status!r}: feed codes 1-7 or GREEN/YELLOW/SC/VSC/VSC_ENDING/RED")
    return code


def _digits_code(digits: str) -> int:
    if "5" in digits:
        return STATUS_RED
    if "4" in digits:
        return STATUS_SC
    if "6" in digits or "7" in digits:
        return STATUS_VSC
    if "2" in digits:
        return STATUS_YELLOW
    return STATUS_GREEN


def status_code_expr(col: str) -> pl.Expr:
    """Polars twin of :func:`status_code` for the digit strings of lap tables."""
    c = pl.col(col).fill_null("")
    return (
        pl.when(c.str.contains("5"))
        .then(STATUS_RED)
        .when(c.str.contains("4"))
        .then(STATUS_SC)
        .when(c.str.contains("[67]"))
        .then(STATUS_VSC)
        .when(c.str.contains("2"))
        .then(STATUS_YELLOW)
        .otherwise(STATUS_GREEN)
        .cast(pl.Int8)
    )


@dataclass(frozen=True, slots=True)
class LapContext:
    """One lap to predict, with what is known before it ends.

    ``recent_laps_s``: this car's previous green laps in this stint, oldest first (only the last
    three are used). ``driver_pace_s`` / ``team_pace_s`` / ``field_pace_s``: the median lap time (s)
    of the green laps completed in this race before this lap started by this car / by its team's
    cars / by all cars (``None`` when there are none). ``position`` / ``gap_ahead_s``: the car's
    place and the interval to the car ahead when it crossed the line to end its previous lap.
    ``track_status`` / ``prev_track_status``: names (``GREEN``, ``YELLOW``, ``SC``, ``VSC``,
    ``VSC_ENDING``, ``RED``) or feed digits, of this lap and of the previous one. ``tyre_age``:
    laps on this set including this one (FastF1 ``TyreLife``); ``stint_lap``: 1 on the first lap
    of the stint. See :mod:`strategy.features` for the definitions.
    """

    circuit: str | None
    lap: int
    total_laps: int
    compound: str | None
    tyre_age: int
    stint_lap: int
    position: int | None = None
    gap_ahead_s: float | None = None
    track_status: str = "GREEN"
    recent_laps_s: tuple[float, ...] = ()
    driver_pace_s: float | None = None
    team_pace_s: float | None = None
    field_pace_s: float | None = None
    prev_track_status: str = "GREEN"


# ------------------------------------------------------------------------------------------
# one derivation for both paths


def _nan(x: float | int | None) -> float:
    return math.nan if x is None else float(x)


BASE_COLUMNS: tuple[str, ...] = (
    "circuit",
    "lap",
    "total_laps",
    "compound",
    "tyre_age",
    "stint_lap",
    "position",
    "gap_ahead_s",
    "track_status",
    "prev_track_status",
    "recent_s",
    "recent_n",
    "last_s",
    "driver_pace_s",
    "team_pace_s",
    "field_pace_s",
)


def derive(base: Mapping[str, np.ndarray], circuit_codes: np.ndarray) -> np.ndarray:
    """The feature matrix (rows x :data:`FEATURES`, float64) from the base columns (numeric
    arrays named as in :data:`BASE_COLUMNS`; ``compound`` and status columns already coded)."""
    n = len(base["lap"])
    x = np.full((n, len(FEATURES)), np.nan)
    lap = base["lap"].astype(np.float64)
    total = np.maximum(base["total_laps"].astype(np.float64), 1.0)
    recent, recent_n = base["recent_s"], base["recent_n"]
    driver, team, fieldp = base["driver_pace_s"], base["team_pace_s"], base["field_pace_s"]
    ref = np.where(recent_n > 0, recent, np.where(np.isnan(driver), fieldp, driver))
    kind = np.where(recent_n >= 3, 0.0, np.where(recent_n > 0, 1.0, np.where(np.isnan(driver), 3.0, 2.0)))
    kind = np.where(np.isnan(ref), np.nan, kind)
    x[:, _IDX["circuit"]] = circuit_codes
    x[:, _IDX["compound"]] = base["compound"]
    x[:, _IDX["lap"]] = lap
    x[:, _IDX["total_laps"]] = total
    x[:, _IDX["race_progress"]] = (lap - 1.0) / total
    x[:, _IDX["fuel_s"]] = fuel_s_array(lap, total)
    x[:, _IDX["tyre_age"]] = base["tyre_age"]
    x[:, _IDX["stint_lap"]] = base["stint_lap"]
    x[:, _IDX["track_status"]] = base["track_status"]
    x[:, _IDX["prev_track_status"]] = base["prev_track_status"]
    x[:, _IDX["position"]] = base["position"]
    x[:, _IDX["gap_ahead_s"]] = np.minimum(base["gap_ahead_s"], GAP_CAP_S)
    x[:, _IDX["reference_s"]] = ref
    x[:, _IDX["reference_kind"]] = kind
    x[:, _IDX["last_minus_recent_s"]] = base["last_s"] - recent
    x[:, _IDX["recent_minus_field_s"]] = recent - fieldp
    x[:, _IDX["driver_rel_s"]] = driver - fieldp
    x[:, _IDX["team_rel_s"]] = team - fieldp
    return x


def reference(x: np.ndarray) -> np.ndarray:
    """The anchor each row's prediction is a correction to (``reference_s``)."""
    return x[:, _IDX["reference_s"]]


def circuit_codes(circuits: Sequence[str | None], vocabulary: Mapping[str, int]) -> np.ndarray:
    return np.array([vocabulary.get(c, math.nan) if c else math.nan for c in circuits], dtype=np.float64)


def matrix(contexts: Sequence[LapContext], vocabulary: Mapping[str, int]) -> np.ndarray:
    """The live path: contexts → feature matrix, plain numpy (no polars), for a few rows fast."""
    n = len(contexts)
    cols = {name: np.empty(n) for name in BASE_COLUMNS if name != "circuit"}
    for i, c in enumerate(contexts):
        if c.total_laps < 1 or c.lap < 1:
            raise ValueError(f"lap {c.lap} of {c.total_laps}: laps count from 1 and total_laps must be ≥ 1")
        recent = c.recent_laps_s[-3:]
        cols["lap"][i] = c.lap
        cols["total_laps"][i] = c.total_laps
        cols["compound"][i] = compound_code(c.compound)
        cols["tyre_age"][i] = c.tyre_age
        cols["stint_lap"][i] = c.stint_lap
        cols["position"][i] = _nan(c.position)
        cols["gap_ahead_s"][i] = _nan(c.gap_ahead_s)
        cols["track_status"][i] = status_code(c.track_status)
        cols["prev_track_status"][i] = status_code(c.prev_track_status)
        cols["recent_s"][i] = median(recent) if recent else math.nan
        cols["recent_n"][i] = len(recent)
        cols["last_s"][i] = recent[-1] if recent else math.nan
        cols["driver_pace_s"][i] = _nan(c.driver_pace_s)
        cols["team_pace_s"][i] = _nan(c.team_pace_s)
        cols["field_pace_s"][i] = _nan(c.field_pace_s)
    return derive(cols, circuit_codes([c.circuit for c in contexts], vocabulary))


# ------------------------------------------------------------------------------------------
# batch path (polars)


def green_expr() -> pl.Expr:
    """Polars twin of :func:`is_green_lap` on a frame from :func:`strategy.data.load_laps`."""
    return representative.polars_expr()


def context_frame(laps: pl.DataFrame) -> pl.DataFrame:
    """Every lap of a loaded lap table with its context columns (:data:`BASE_COLUMNS`, strings for
    circuit/compound/status) and ``green``, ``in_lap``, ``out_lap``, ``LapTime``, keys. Lap ``n``
    sees only the past: its own earlier laps, other cars' laps that ended before it started."""
    df = (
        laps.sort("race", "Driver", "LapNumber")
        .with_columns(
            pl.col("Stint").fill_null(strategy="forward").over("race", "Driver").fill_null(1),
        )
        .with_columns(
            green_expr().alias("green"),
            pl.col("PitInTime").is_not_null().alias("in_lap"),
            pl.col("PitOutTime").is_not_null().alias("out_lap"),
            pl.col("LapNumber").max().over("race").alias("total_laps"),
            (pl.col("LapNumber") - pl.col("LapNumber").min().over("race", "Driver", "Stint") + 1).alias("stint_lap"),
        )
        .with_columns(
            pl.col("TyreLife").fill_null(pl.col("stint_lap")).cast(pl.Float64).alias("tyre_age"),
        )
    )
    keys = ["race", "Driver"]
    # previous lap (n - 1) of the same car: its end time, status, and place at the line
    line = (
        df.filter(pl.col("Time").is_not_null())
        .sort("race", "LapNumber", "Time", "Driver")  # equal times: by driver code, as LiveRace does
        .with_columns(
            pl.col("Time").cum_count().over("race", "LapNumber").cast(pl.Float64).alias("position"),
            (pl.col("Time") - pl.col("Time").shift(1).over("race", "LapNumber")).alias("gap_ahead_s"),
        )
        .select(*keys, (pl.col("LapNumber") + 1).alias("LapNumber"), "position", "gap_ahead_s")
    )
    prev = df.select(
        *keys,
        (pl.col("LapNumber") + 1).alias("LapNumber"),
        pl.col("Time").alias("start_time"),
        pl.col("TrackStatus").alias("prev_status_raw"),
    )
    df = df.join(prev, on=[*keys, "LapNumber"], how="left").join(line, on=[*keys, "LapNumber"], how="left")

    # recent pace: previous green laps of this stint (median of the last three)
    greens = (
        df.filter(pl.col("green"))
        .sort("race", "Driver", "LapNumber")
        .select(
            *keys,
            "Stint",
            pl.col("LapNumber").alias("green_lap"),
            pl.col("LapTime").rolling_median(3, min_samples=1).over("race", "Driver", "Stint").alias("recent_s"),
            pl.col("LapTime").cum_count().over("race", "Driver", "Stint").clip(0, 3).cast(pl.Float64).alias("recent_n"),
            pl.col("LapTime").alias("last_s"),
        )
    )
    df = (
        df.with_columns((pl.col("LapNumber") - 1).alias("_before"))
        .sort("_before")
        .join_asof(
            greens.sort("green_lap"),
            left_on="_before",
            right_on="green_lap",
            by=[*keys, "Stint"],
            strategy="backward",
            check_sortedness=False,
        )
    )

    # driver / team / field pace: expanding medians of green laps, as of the lap's start
    stream = df.filter(pl.col("green")).sort("Time")
    big = max(stream.height, 1)
    for name, by in (("field_pace_s", ["race"]), ("team_pace_s", ["race", "Team"]), ("driver_pace_s", keys)):
        paces = stream.select(
            *by,
            pl.col("Time").alias(f"_t_{name}"),
            pl.col("LapTime").rolling_median(big, min_samples=1).over(by).alias(name),
        ).sort(f"_t_{name}")
        df = df.sort("start_time").join_asof(
            paces, left_on="start_time", right_on=f"_t_{name}", by=by, strategy="backward", check_sortedness=False
        )

    return df.sort("race", "Driver", "LapNumber").select(
        "race",
        "Driver",
        "Team",
        "year",
        "kind",
        "circuit",
        "Time",
        "LapTime",
        pl.col("LapNumber").alias("lap"),
        "total_laps",
        "Compound",
        "tyre_age",
        "stint_lap",
        "Stint",
        "position",
        "gap_ahead_s",
        pl.col("TrackStatus").alias("track_status_raw"),
        pl.col("prev_status_raw").fill_null("1"),
        pl.col("recent_s"),
        pl.col("recent_n").fill_null(0.0),
        "last_s",
        "driver_pace_s",
        "team_pace_s",
        "field_pace_s",
        "green",
        "in_lap",
        "out_lap",
    )


def frame_matrix(ctx: pl.DataFrame, vocabulary: Mapping[str, int]) -> np.ndarray:
    """The batch path: :func:`context_frame` output → feature matrix (same :func:`derive`)."""
    coded = ctx.with_columns(
        pl.col("Compound")
        .fill_null("UNKNOWN")
        .replace_strict({c: float(i) for i, c in enumerate(COMPOUNDS)}, default=None, return_dtype=pl.Float64)
        .fill_null(float("nan"))
        .alias("_compound"),
        status_code_expr("track_status_raw").cast(pl.Float64).alias("_status"),
        status_code_expr("prev_status_raw").cast(pl.Float64).alias("_prev_status"),
    )

    def col(name: str) -> np.ndarray:
        return coded[name].cast(pl.Float64).fill_null(float("nan")).to_numpy().astype(np.float64, copy=False)

    base = {
        "lap": col("lap"),
        "total_laps": col("total_laps"),
        "compound": col("_compound"),
        "tyre_age": col("tyre_age"),
        "stint_lap": col("stint_lap"),
        "position": col("position"),
        "gap_ahead_s": col("gap_ahead_s"),
        "track_status": col("_status"),
        "prev_track_status": col("_prev_status"),
        "recent_s": col("recent_s"),
        "recent_n": col("recent_n"),
        "last_s": col("last_s"),
        "driver_pace_s": col("driver_pace_s"),
        "team_pace_s": col("team_pace_s"),
        "field_pace_s": col("field_pace_s"),
    }
    return derive(base, circuit_codes(ctx["circuit"].to_list(), vocabulary))


def scored_mask(ctx: pl.DataFrame) -> np.ndarray:
    """Laps ``racewire evaluate`` scores: green laps with three previous green laps in the stint."""
    return (ctx["green"] & (ctx["recent_n"] >= 3)).to_numpy()


# ------------------------------------------------------------------------------------------
# live path (pure Python state of one race)


@dataclass(slots=True)
class _Car:
    team: str
    stint: int = 0
    stint_greens: list[float] = field(default_factory=list)
    last_end_s: float | None = None
    last_lap: int = 0
    last_status: str = "1"


class LiveRace:
    """A race's completed laps, kept to build the :class:`LapContext` of any car's next lap.

    Feed it every lap completion in the order they happen (:meth:`add_lap`), then ask
    :meth:`context` for a car's next lap. Memory: a few floats per completed lap.
    """

    def __init__(self, circuit: str | None, total_laps: int) -> None:
        self.circuit = circuit
        self.total_laps = total_laps
        self._cars: dict[str, _Car] = {}
        self._field: list[float] = []
        self._team: dict[str, list[float]] = {}
        self._driver: dict[str, list[float]] = {}
        self._line: dict[int, list[tuple[float, str]]] = {}

    def add_lap(
        self,
        driver: str,
        team: str,
        lap: int,
        time_s: float | None,
        lap_time_s: float | None,
        stint: int,
        track_status: str,
        pit_in: bool = False,
        pit_out: bool = False,
    ) -> None:
        """Car ``driver`` completed ``lap`` at session time ``time_s`` (crossing the line)."""
        car = self._cars.setdefault(driver, _Car(team=team))
        if stint != car.stint:
            car.stint, car.stint_greens = stint, []
        if is_green_lap(lap, lap_time_s, track_status, pit_in, pit_out):
            assert lap_time_s is not None
            car.stint_greens.append(lap_time_s)
            bisect.insort(self._field, lap_time_s)
            bisect.insort(self._team.setdefault(team, []), lap_time_s)
            bisect.insort(self._driver.setdefault(driver, []), lap_time_s)
        car.last_lap, car.last_status, car.last_end_s = lap, track_status or "1", time_s
        if time_s is not None:
            bisect.insort(self._line.setdefault(lap, []), (time_s, driver))

    def context(
        self,
        driver: str,
        compound: str | None,
        tyre_age: int,
        stint_lap: int,
        track_status: str = "GREEN",
        lap: int | None = None,
        stint: int | None = None,
    ) -> LapContext:
        """The context of ``driver``'s next lap (``lap``: by default the one after its last;
        ``stint``: the lap's stint number, a new one after a pit stop)."""
        car = self._cars.get(driver)
        new_stint = car is not None and stint is not None and stint != car.stint
        n = lap if lap is not None else (car.last_lap + 1 if car else 1)
        position = gap = None
        prev_status = "1"
        if car is not None and car.last_lap == n - 1 and car.last_end_s is not None:
            prev_status = car.last_status
            order = self._line.get(n - 1, [])
            i = bisect.bisect_left(order, (car.last_end_s, driver))
            position = i + 1
            gap = car.last_end_s - order[i - 1][0] if i > 0 else None
        team = car.team if car else None
        return LapContext(
            circuit=self.circuit,
            lap=n,
            total_laps=self.total_laps,
            compound=compound,
            tyre_age=tyre_age,
            stint_lap=stint_lap,
            position=position,
            gap_ahead_s=gap,
            track_status=track_status,
            recent_laps_s=tuple(car.stint_greens[-3:]) if car and not new_stint else (),
            driver_pace_s=_median(self._driver.get(driver)),
            team_pace_s=_median(self._team.get(team)) if team else None,
            field_pace_s=_median(self._field),
            prev_track_status=prev_status,
        )


def _median(sorted_values: list[float] | None) -> float | None:
    if not sorted_values:
        return None
    n = len(sorted_values)
    mid = n // 2
    return sorted_values[mid] if n % 2 else (sorted_values[mid - 1] + sorted_values[mid]) / 2.0


def describe_features() -> dict[str, Any]:
    return {
        "features": list(FEATURES),
        "categorical": list(CATEGORICAL),
        "fuel_kg": START_FUEL_KG,
        "fuel_s_per_kg": FUEL_S_PER_KG,
    }
