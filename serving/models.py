"""Pydantic models of the API's requests and responses (they document the OpenAPI schema).

Documents that come from Redis are passed through as stored (the dataflow writes them from
``schemas.model`` objects), so read endpoints do not re-validate them; these models describe them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serving.simulations import RACE_ID_PATTERN


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FastestLapOut(_Open):
    driver_number: int
    code: str
    lap: int
    lap_time_ms: int
    crossing_ms: int


class HeroOut(_Open):
    driver_number: int
    code: str
    lap: int
    lap_time_ms: int
    positions_gained: int
    final: bool


class RowOut(_Open):
    position: int
    driver_number: int
    code: str
    team: str
    team_colour: str = Field(description="hex RGB without '#'")
    laps: int
    progress: float
    status: str = Field(description="RUNNING, PIT, RETIRED or FINISHED")
    timing_position: int
    gap_ms: int | None = None
    gap_laps: int = 0
    interval_ms: int | None = None
    interval_laps: int = 0
    last_lap_ms: int | None = None
    best_lap_ms: int | None = None
    compound: str | None = None
    tyre_age: int | None = None
    pit_count: int = 0
    positions_gained_last_lap: int | None = None
    knocked_out: int | None = Field(None, description="qualifying: the part (1 or 2) that knocked this car out")
    best_lap_number: int | None = None


class LeaderboardOut(_Open):
    race_id: str
    version: int
    ts_ms: int
    lap: int
    total_laps: int
    track_status: str
    finished: bool
    final: bool
    rows: list[RowOut]
    fastest_lap: FastestLapOut | None = None
    hero: HeroOut | None = None
    reason: str = "timing"
    session_type: str = Field("RACE", description="RACE, SPRINT, QUALIFYING, SPRINT_QUALIFYING or PRACTICE; "
                              "the last three are ordered by best lap time")
    part: int = Field(0, description="qualifying: the part running or last run (1-3)")
    cut: int = Field(0, description="qualifying: cars of the part running that go on (the rest: knock-out zone)")
    clock_remaining_ms: int | None = Field(None, description="session clock: time left at clock_ts_ms")
    clock_ts_ms: int | None = None
    clock_running: bool = False
    weather: dict[str, Any] | None = Field(None, description="the latest weather: ts_ms, air_temp_c, track_temp_c, "
                                           "humidity_pct, pressure_mbar, wind_speed_ms, wind_direction_deg, rainfall")
    positions: dict[str, list[float]] = Field(default_factory=dict, description="driver number → [x, y]")


class RaceSummaryOut(_Open):
    race_id: str
    name: str | None = None
    lap: int | None = None
    total_laps: int | None = None
    status: str | None = Field(None, description="live, chequered or finished")
    track_status: str | None = None
    leader: str | None = None
    version: int | None = None


class RacesOut(BaseModel):
    races: list[RaceSummaryOut]


class HeroResponse(BaseModel):
    race_id: str
    hero: HeroOut | None = Field(None, description="null until a car has taken the chequered flag")
    final: bool = Field(False, description="true once the last running car has finished")


class FastestLapResponse(BaseModel):
    race_id: str
    fastest_lap: FastestLapOut | None = None


class EventOut(BaseModel):
    id: str = Field(description="Redis stream entry id; pass it as `after` to page on, or as Last-Event-ID")
    type: str
    kind: str = Field(description="`event` or `commentary`")
    data: dict[str, Any]


class EventsOut(BaseModel):
    race_id: str
    events: list[EventOut]
    next: str | None = Field(None, description="id of the last event returned (the next page's `after`)")


class DriverOut(_Open):
    number: int
    code: str
    name: str | None = None
    team: str | None = None
    team_colour: str | None = None


class RaceDriversOut(BaseModel):
    race_id: str
    drivers: list[DriverOut]
    track_outline: list[dict[str, float]] = Field(default_factory=list)
    name: str | None = None
    circuit: str | None = None
    total_laps: int | None = None
    track_length_m: int | None = None
    start_time: str | None = None
    history: bool = Field(False, description="a history store is configured: the laps already run are at "
                                             "/api/races/{race_id}/laps")


class DriverEntryOut(DriverOut):
    races: list[str]


class DriversOut(BaseModel):
    drivers: list[DriverEntryOut]


class DependencyOut(_Open):
    ok: bool | None = Field(description="null: not configured, or not known yet")
    configured: bool = True


class HealthOut(BaseModel):
    status: str = Field(description="ok, or degraded when a configured dependency is down")
    serving_from: str | None = Field(description="where reads are answered from now: redis, postgresql "
                                                 "(the fallback) or null (none: the answer is a 503)")
    down: list[str] = Field(description="the configured dependencies that are down")
    dependencies: dict[str, DependencyOut] = Field(
        description="redis, postgresql, kafka, schema_registry, ingest, dataflow; details for operators only")
    sse_clients: int
    sse_channels: int


class ReadyOut(BaseModel):
    status: str = Field(description="ready or not ready")
    serving_from: str | None = Field(description="redis, postgresql (the fallback) or null")


class IngestItem(BaseModel):
    topic: str = Field(description="an input topic: f1.race.session, f1.timing.lap, f1.telemetry.car, f1.race.control")
    record: Any = Field(description="the record as JSON, fields as in the topic's Avro schema")


class IngestResult(BaseModel):
    accepted: int
    results: list[dict[str, Any]]


class SimulationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(1, ge=0, le=2**31 - 1)
    laps: int = Field(10, ge=1, le=100)
    speed: float = Field(10.0, gt=0, le=1000, description="1 = real time")
    race_id: str | None = Field(None, pattern=RACE_ID_PATTERN)
    follow: str | None = Field(None, pattern=r"^[A-Za-z]{3}$", description="driver code to follow on the page")


class SimulationOut(BaseModel):
    id: str
    race_id: str
    state: str = Field(description="running, finished, failed or stopped")
    seed: int
    laps: int
    speed: float
    follow: str | None
    pid: int
    returncode: int | None
    started_at: str
    ended_at: str | None
    output_tail: list[str]
    watch_url: str
