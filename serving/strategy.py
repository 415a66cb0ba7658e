"""Strategy API: request and response models, and the live race situation read from Redis.

The handlers (:mod:`serving.routes.strategy`) stay short: they validate with these models, build a
:class:`~strategy.field.Situation` (posted, or from the live race), and hand the numbers to the
strategy package in a worker thread (the simulation releases the GIL).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from strategy.field import CarInput, Situation

Compound = Literal["SOFT", "MEDIUM", "HARD", "INTERMEDIATE", "WET"]
Status = Literal["GREEN", "YELLOW", "SC", "VSC", "VSC_ENDING", "RED"]
#: lap times outside this range are not lap times (seconds)
LAP_S = {"ge": 30.0, "le": 400.0}
LapSeconds = Annotated[float, Field(ge=LAP_S["ge"], le=LAP_S["le"], description="seconds")]
MAX_SIMS = 20_000


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LapTimeIn(_In):
    """One lap to predict, with what is known before it ends (see the lap-time model's features)."""

    circuit: str | None = Field(None, description="any circuit or event name", examples=["Bahrain Grand Prix"])
    lap: int = Field(ge=1, le=200, description="lap number to predict")
    total_laps: int = Field(ge=1, le=200)
    compound: Compound
    tyre_age: int = Field(ge=1, le=100, description="laps on this set including this lap")
    stint_lap: int = Field(1, ge=1, le=100, description="1 on the first lap of the stint")
    position: int | None = Field(None, ge=1, le=30)
    gap_ahead_s: float | None = Field(None, ge=0, le=600, description="interval to the car ahead (traffic)")
    track_status: Status = "GREEN"
    recent_laps_s: list[float] = Field(default_factory=list, max_length=10,
                                       description="previous green laps in this stint, oldest first")
    driver_pace_s: LapSeconds | None = None
    team_pace_s: LapSeconds | None = None
    field_pace_s: LapSeconds | None = None

    _norm = field_validator("compound", "track_status", mode="before")(_upper)

    @field_validator("recent_laps_s")
    @classmethod
    def _laps(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not LAP_S["ge"] <= x <= LAP_S["le"]]
        if bad:
            raise ValueError(f"lap times must be {LAP_S['ge']}-{LAP_S['le']} s, got {bad}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> LapTimeIn:
        if self.lap > self.total_laps:
            raise ValueError(f"lap {self.lap} is beyond the race distance ({self.total_laps} laps)")
        if self.stint_lap > self.tyre_age:
            raise ValueError(f"stint_lap {self.stint_lap} > tyre_age {self.tyre_age}: a set is at least as old "
                             "as the stint on it")
        return self


class LapTimeOut(BaseModel):
    lap_time_s: float
    model: str
    fallback: bool
    reason: str | None = None


class DegradationIn(_In):
    circuit: str | None = Field(None, examples=["Bahrain Grand Prix"])
    compound: Compound
    tyre_ages: list[int] = Field(default_factory=lambda: list(range(1, 31)), min_length=1, max_length=100,
                                 description="tyre ages (laps) to evaluate the curve at")

    _norm = field_validator("compound", mode="before")(_upper)

    @field_validator("tyre_ages")
    @classmethod
    def _ages(cls, v: list[int]) -> list[int]:
        if any(a < 0 or a > 100 for a in v):
            raise ValueError("tyre ages must be 0-100 laps")
        return v


class CurvePoint(BaseModel):
    tyre_age: int
    delta_s: float


class DegradationOut(BaseModel):
    circuit: str | None
    compound: str
    linear_s_per_lap: float
    quadratic_s_per_lap2: float
    stderr_s_per_lap: float | None
    offset_s: float = Field(description="pace vs MEDIUM at equal age and fuel")
    curve: list[CurvePoint]
    model: str
    fallback: bool
    reason: str | None = None


class SafetyCarOut(BaseModel):
    race_id: str
    circuit: str | None
    lap: int
    total_laps: int
    sc: float = Field(description="probability a safety car is deployed during this lap")
    vsc: float
    red: float
    sc_rest_of_race: float = Field(description="probability of at least one safety car from this lap to the flag")
    vsc_rest_of_race: float
    model: str
    fallback: bool
    reason: str | None = None


class CarIn(_In):
    number: int = Field(ge=0, le=999)
    code: str = Field("", max_length=8)
    team: str | None = Field(None, max_length=64)
    gap_s: float = Field(0.0, ge=0, le=36_000, description="behind the leader at the line (lapped: incl. laps)")
    compound: Compound
    tyre_age: int = Field(ge=0, le=100, description="laps done on the current set")
    stint_lap: int | None = Field(None, ge=0, le=100, description="laps done in this stint (default: tyre_age)")
    stops: int = Field(0, ge=0, le=10)
    used_compounds: list[Compound] = Field(default_factory=list, max_length=5)
    active: bool = True
    recent_laps_s: list[float] = Field(default_factory=list, max_length=10)
    driver_pace_s: LapSeconds | None = None
    pitting: bool = Field(False, description="its last lap ended in the pit lane: the stop is under way "
                                             "(simulated out of the pits on the compound its best plan takes)")
    in_lap_loss_s: float | None = Field(None, ge=0, le=120, description="how much slower than its pace "
                                        "that in-lap was (default: half the pit loss)")

    _norm = field_validator("compound", mode="before")(_upper)

    @field_validator("used_compounds", mode="before")
    @classmethod
    def _used(cls, v: Any) -> Any:
        return [_upper(x) for x in v] if isinstance(v, list) else v


class SituationIn(_In):
    """A race at the timing line after the leader completed ``lap`` laps; cars in running order."""

    circuit: str | None = Field(None, examples=["Bahrain Grand Prix"])
    lap: int = Field(ge=0, le=200)
    total_laps: int = Field(ge=2, le=200)
    cars: list[CarIn] = Field(min_length=1, max_length=30)
    field_pace_s: LapSeconds | None = None
    pit_loss_s: float | None = Field(None, ge=5, le=60)

    @model_validator(mode="after")
    def _consistent(self) -> SituationIn:
        if self.lap >= self.total_laps:
            raise ValueError(f"lap {self.lap}: nothing left to simulate in a {self.total_laps}-lap race")
        numbers = [c.number for c in self.cars]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"car numbers must be unique: {numbers}")
        return self

    def situation(self) -> Situation:
        return Situation(
            circuit=self.circuit, lap=self.lap, total_laps=self.total_laps, field_pace_s=self.field_pace_s,
            pit_loss_s=self.pit_loss_s,
            cars=[CarInput(number=c.number, code=c.code or str(c.number), team=c.team, gap_s=c.gap_s,
                           compound=c.compound, tyre_age=c.tyre_age,
                           stint_lap=c.tyre_age if c.stint_lap is None else c.stint_lap, stops=c.stops,
                           used_compounds=tuple(c.used_compounds), active=c.active,
                           recent_laps_s=tuple(c.recent_laps_s), driver_pace_s=c.driver_pace_s,
                           pitting=c.pitting, in_lap_loss_s=c.in_lap_loss_s)
                  for c in self.cars])


class _SimIn(_In):
    race_id: str | None = Field(None, description="a live race: simulate from its current state",
                                pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
    situation: SituationIn | None = Field(None, description="or an explicit situation")
    sims: int = Field(2000, ge=10, le=MAX_SIMS)
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _one_source(self) -> Any:
        if (self.race_id is None) == (self.situation is None):
            raise ValueError("give exactly one of race_id (a live race) or situation")
        return self


class RaceSimIn(_SimIn):
    pass


class StopIn(_In):
    lap: int = Field(ge=1, le=200, description="in-lap: the car pits at the end of this lap")
    compound: Compound

    _norm = field_validator("compound", mode="before")(_upper)


class StrategyIn(_In):
    stops: list[StopIn] = Field(max_length=4, description="the stops still to make, in order")


class OptimalIn(_SimIn):
    driver: int = Field(ge=0, le=999, description="car number")
    top: int = Field(5, ge=1, le=20)


class CompareIn(_SimIn):
    driver: int = Field(ge=0, le=999, description="car number")
    strategies: list[StrategyIn] = Field(min_length=1, max_length=10)


def situation_from_live(state: dict[str, Any], stints: dict[str, dict[str, Any]],
                        session: dict[str, Any] | None) -> Situation:
    """The live race as a :class:`Situation`: the latest timing tower (Redis state document), each
    car's stints (``race:{id}:stints``) and the session (circuit, pit loss).

    Recent pace is the median of the current stint's representative laps; a lapped car's gap is
    its laps down times the field's median pace. Raises ``ValueError`` when the race has nothing
    left to simulate.
    """
    rows = sorted(state.get("rows") or [], key=lambda r: r.get("position") or 99)
    if not rows:
        raise ValueError("the race has no timing tower yet")
    if state.get("finished") or state.get("final"):
        raise ValueError("the race is over: nothing left to simulate")
    by_car: dict[int, list[dict[str, Any]]] = {}
    for doc in stints.values():
        by_car.setdefault(int(doc["driver_number"]), []).append(doc)
    paces = [s["median_pace_ms"] / 1000.0 for docs in by_car.values() for s in docs if s.get("median_pace_ms")]
    field_pace = sorted(paces)[len(paces) // 2] if paces else None
    leader_laps = max(int(r.get("laps") or 0) for r in rows)
    total = int(state.get("total_laps") or (session or {}).get("total_laps") or 0)
    cars = []
    for r in rows:
        number = int(r["driver_number"])
        mine = sorted(by_car.get(number, []), key=lambda s: s["stint"])
        current = mine[-1] if mine else {}
        if r.get("gap_laps"):
            gap = r["gap_laps"] * (field_pace or 90.0) + (r.get("gap_ms") or 0) / 1000.0
        else:
            gap = (r.get("gap_ms") or 0) / 1000.0
        deg = current.get("degradation_ms_per_lap")
        se = current.get("degradation_stderr")
        pace = current.get("median_pace_ms")
        age = r.get("tyre_age")
        cars.append(CarInput(
            number=number, code=r.get("code") or str(number), team=r.get("team"), gap_s=gap,
            compound=r.get("compound"), tyre_age=int(age) if age is not None else int(current.get("length") or 0),
            stint_lap=int(current.get("length") or age or 0), stops=int(r.get("pit_count") or 0),
            used_compounds=tuple(sorted({s["compound"] for s in mine if s.get("compound")})),
            active=r.get("status") in ("RUNNING", "PIT"), pitting=r.get("status") == "PIT",
            recent_laps_s=(pace / 1000.0,) if pace else (),
            driver_pace_s=pace / 1000.0 if pace else None,
            degradation_s=None if deg is None or se is None or (current.get("laps_used") or 0) < 5 else deg / 1000.0,
            degradation_stderr_s=None if se is None else se / 1000.0))
    session = session or {}
    pit_loss = session.get("pit_loss_ms")
    if leader_laps >= total:
        raise ValueError("the race is over: nothing left to simulate")
    return Situation(circuit=session.get("circuit") or session.get("name"), lap=leader_laps, total_laps=total,
                     cars=cars, track_status=str(state.get("track_status") or "GREEN"), field_pace_s=field_pace,
                     pit_loss_s=pit_loss / 1000.0 if pit_loss else None)
