"""Domain objects for every racewire topic.

These are plain dataclasses: race logic works on them and never sees Avro. They become dicts
only at the codec (:mod:`schemas.codec`), through ``to_dict`` / ``from_dict``. Field names
equal the Avro field names in ``schemas/avro/*.avsc`` one for one.

Times are integers in milliseconds of *session time* (``*_ms``) unless a field is a
timezone-aware :class:`datetime.datetime`.

Records are treated as immutable values, but the dataclasses are not ``frozen``: constructing a
frozen slotted dataclass costs about ten times as much (every field goes through
``object.__setattr__``), and one is built per input record on the hot path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar


class TrackStatus(StrEnum):
    """Track status, as in the live-timing feed (codes 1, 2, 4, 5, 6, 7)."""

    GREEN = "GREEN"
    YELLOW = "YELLOW"
    SC = "SC"
    RED = "RED"
    VSC = "VSC"
    VSC_ENDING = "VSC_ENDING"

    @property
    def neutralised(self) -> bool:
        """True under safety car, virtual safety car or red flag."""
        return self in (TrackStatus.SC, TrackStatus.VSC, TrackStatus.VSC_ENDING, TrackStatus.RED)

    @classmethod
    def from_feed_code(cls, code: int | str) -> TrackStatus:
        """Map a live-timing track status code (``"1"`` … ``"7"``) to a status.

        >>> TrackStatus.from_feed_code("4")
        <TrackStatus.SC: 'SC'>
        """
        return _FEED_CODES[int(code)]


_FEED_CODES = {
    1: TrackStatus.GREEN,
    2: TrackStatus.YELLOW,
    4: TrackStatus.SC,
    5: TrackStatus.RED,
    6: TrackStatus.VSC,
    7: TrackStatus.VSC_ENDING,
}


class ControlKind(StrEnum):
    TRACK_STATUS = "TRACK_STATUS"
    RACE_START = "RACE_START"
    CHEQUERED_FLAG = "CHEQUERED_FLAG"
    RETIREMENT = "RETIREMENT"
    PENALTY = "PENALTY"
    MESSAGE = "MESSAGE"
    #: race control deleted (reinstated) ``lap`` of ``driver_number`` after the lap went out
    LAP_DELETED = "LAP_DELETED"
    LAP_REINSTATED = "LAP_REINSTATED"
    #: a part of a qualifying session started / its flag fell (``part``)
    PART_START = "PART_START"
    PART_END = "PART_END"
    #: the session clock: ``remaining_ms`` at ``ts_ms``, running down or stopped
    CLOCK = "CLOCK"
    #: a team-radio clip of ``driver_number`` was published (``clip_path``)
    TEAM_RADIO = "TEAM_RADIO"


class SessionKind(StrEnum):
    """What kind of session: a race or sprint is ordered by distance, the others by best lap."""

    RACE = "RACE"
    SPRINT = "SPRINT"
    QUALIFYING = "QUALIFYING"
    SPRINT_QUALIFYING = "SPRINT_QUALIFYING"
    PRACTICE = "PRACTICE"

    @property
    def timed(self) -> bool:
        """Ordered by best lap time (qualifying, sprint qualifying, practice), not by distance."""
        return self not in (SessionKind.RACE, SessionKind.SPRINT)

    @property
    def knockout(self) -> bool:
        """Run in knock-out parts (Q1-Q3, SQ1-SQ3)."""
        return self in (SessionKind.QUALIFYING, SessionKind.SPRINT_QUALIFYING)

    def part_name(self, part: int) -> str:
        """What the timing screens call a part: Q2, or SQ2 in sprint qualifying."""
        return f"{'SQ' if self is SessionKind.SPRINT_QUALIFYING else 'Q'}{part}"


class EventType(StrEnum):
    OVERTAKE = "OVERTAKE"
    FASTEST_LAP = "FASTEST_LAP"
    PERSONAL_BEST = "PERSONAL_BEST"
    LAST_LAP_HERO = "LAST_LAP_HERO"
    PIT_STOP = "PIT_STOP"
    RETIREMENT = "RETIREMENT"
    FLAG = "FLAG"
    RACE_START = "RACE_START"
    CHEQUERED_FLAG = "CHEQUERED_FLAG"
    FINISHED = "FINISHED"
    CLASSIFICATION = "CLASSIFICATION"
    PENALTY = "PENALTY"
    #: a race-control message as sent
    RACE_CONTROL = "RACE_CONTROL"
    #: a team-radio clip of a car was published
    TEAM_RADIO = "TEAM_RADIO"
    #: (readers only) a type added after this version
    OTHER = "OTHER"


class OvertakeKind(StrEnum):
    ON_TRACK = "ON_TRACK"
    PIT = "PIT"
    RETIREMENT = "RETIREMENT"


class CarStatus(StrEnum):
    RUNNING = "RUNNING"
    PIT = "PIT"
    RETIRED = "RETIRED"
    FINISHED = "FINISHED"


class _Record:
    """Shared ``to_dict`` / ``from_dict`` for flat records."""

    TOPIC: ClassVar[str]

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        # shallow and fast: flat records only; records with nested parts override this
        names: tuple[str, ...] = self.__slots__  # type: ignore[attr-defined]
        return {name: getattr(self, name) for name in names}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return cls(**data)


# --------------------------------------------------------------------------- input


@dataclass(slots=True)
class Driver(_Record):
    number: int
    code: str
    name: str
    team: str
    team_colour: str = "888888"


@dataclass(slots=True)
class TrackPoint(_Record):
    x: float
    y: float


@dataclass(slots=True)
class Session(_Record):
    """``f1.race.session``: race metadata (compacted topic, key ``race_id``)."""

    TOPIC: ClassVar[str] = "f1.race.session"

    event_id: str
    race_id: str
    name: str
    circuit: str
    total_laps: int
    track_length_m: int
    start_time: datetime
    drivers: list[Driver]
    grid: list[int] = field(default_factory=list)
    track_outline: list[TrackPoint] = field(default_factory=list)
    pit_loss_ms: int | None = None
    source: str = "simulator"
    session_type: SessionKind = SessionKind.RACE

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["session_type"] = str(self.session_type)
        return d

    def driver(self, number: int) -> Driver | None:
        for d in self.drivers:
            if d.number == number:
                return d
        return None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Session:
        data = dict(data)
        data["drivers"] = [Driver(**d) for d in data["drivers"]]
        data["track_outline"] = [TrackPoint(**p) for p in data.get("track_outline") or []]
        data["session_type"] = SessionKind(data.get("session_type") or "RACE")
        return cls(**data)


@dataclass(slots=True)
class Lap(_Record):
    """``f1.timing.lap``: one car completed one lap (key ``race_id:driver_number``)."""

    TOPIC: ClassVar[str] = "f1.timing.lap"

    event_id: str
    race_id: str
    driver_number: int
    lap: int
    crossing_ms: int
    lap_time_ms: int | None = None
    sector1_ms: int | None = None
    sector2_ms: int | None = None
    sector3_ms: int | None = None
    pit_in: bool = False
    pit_out: bool = False
    pit_lane_ms: int | None = None
    compound: str | None = None
    tyre_age: int | None = None
    track_status: TrackStatus = TrackStatus.GREEN
    deleted: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in self.__slots__}
        d["track_status"] = str(self.track_status)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lap:
        data = dict(data)
        data["track_status"] = TrackStatus(data["track_status"])
        return cls(**data)


@dataclass(slots=True)
class Telemetry(_Record):
    """``f1.telemetry.car``: one car sample, about 4 Hz (key ``race_id:driver_number``)."""

    TOPIC: ClassVar[str] = "f1.telemetry.car"

    event_id: str
    race_id: str
    driver_number: int
    ts_ms: int
    lap: int
    progress: float
    x: float
    y: float
    speed_kph: float
    rpm: int
    gear: int
    throttle: float
    brake: bool
    drs: bool
    in_pit: bool = False


@dataclass(slots=True)
class Control(_Record):
    """``f1.race.control``: flags, safety car, retirements, penalties (key ``race_id``)."""

    TOPIC: ClassVar[str] = "f1.race.control"

    event_id: str
    race_id: str
    ts_ms: int
    kind: ControlKind
    message: str = ""
    track_status: TrackStatus | None = None
    driver_number: int | None = None
    lap: int | None = None
    part: int | None = None
    remaining_ms: int | None = None
    clock_running: bool = False
    clip_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = str(self.kind)
        d["track_status"] = None if self.track_status is None else str(self.track_status)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Control:
        data = dict(data)
        data["kind"] = ControlKind(data["kind"])
        if data.get("track_status") is not None:
            data["track_status"] = TrackStatus(data["track_status"])
        return cls(**data)


@dataclass(slots=True)
class Weather(_Record):
    """``f1.weather``: the weather at the circuit, about once a minute (key ``race_id``)."""

    TOPIC: ClassVar[str] = "f1.weather"

    event_id: str
    race_id: str
    ts_ms: int
    air_temp_c: float | None = None
    track_temp_c: float | None = None
    humidity_pct: float | None = None
    pressure_mbar: float | None = None
    wind_speed_ms: float | None = None
    wind_direction_deg: int | None = None
    rainfall: bool = False

    def now(self) -> WeatherNow:
        """The measurement as the tower shows it."""
        return WeatherNow(self.ts_ms, self.air_temp_c, self.track_temp_c, self.humidity_pct, self.pressure_mbar,
                          self.wind_speed_ms, self.wind_direction_deg, self.rainfall)


InputRecord = Session | Lap | Telemetry | Control | Weather


# -------------------------------------------------------------------------- output


@dataclass(slots=True)
class FastestLap(_Record):
    driver_number: int
    code: str
    lap: int
    lap_time_ms: int
    crossing_ms: int


@dataclass(slots=True)
class Hero(_Record):
    """Last-lap hero: fastest own final lap among the cars that took the flag."""

    driver_number: int
    code: str
    lap: int
    lap_time_ms: int
    positions_gained: int
    final: bool


@dataclass(slots=True)
class WeatherNow(_Record):
    """The latest weather of a session, on the tower."""

    ts_ms: int
    air_temp_c: float | None = None
    track_temp_c: float | None = None
    humidity_pct: float | None = None
    pressure_mbar: float | None = None
    wind_speed_ms: float | None = None
    wind_direction_deg: int | None = None
    rainfall: bool = False


@dataclass(slots=True)
class LeaderboardRow(_Record):
    position: int
    driver_number: int
    code: str
    team: str
    team_colour: str
    laps: int
    progress: float
    status: CarStatus
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
    knocked_out: int | None = None
    best_lap_number: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = str(self.status)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LeaderboardRow:
        data = dict(data)
        data["status"] = CarStatus(data["status"])
        return cls(**data)


@dataclass(slots=True)
class Leaderboard(_Record):
    """``f1.race.leaderboard``: a coalesced snapshot of the timing tower (key ``race_id``)."""

    TOPIC: ClassVar[str] = "f1.race.leaderboard"

    race_id: str
    version: int
    ts_ms: int
    lap: int
    total_laps: int
    track_status: TrackStatus
    finished: bool
    final: bool
    rows: list[LeaderboardRow]
    fastest_lap: FastestLap | None = None
    hero: Hero | None = None
    reason: str = "timing"
    session_type: SessionKind = SessionKind.RACE
    part: int = 0
    cut: int = 0
    clock_remaining_ms: int | None = None
    clock_ts_ms: int | None = None
    clock_running: bool = False
    weather: WeatherNow | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "race_id": self.race_id,
            "version": self.version,
            "ts_ms": self.ts_ms,
            "lap": self.lap,
            "total_laps": self.total_laps,
            "track_status": str(self.track_status),
            "finished": self.finished,
            "final": self.final,
            "rows": [r.to_dict() for r in self.rows],
            "fastest_lap": None if self.fastest_lap is None else self.fastest_lap.to_dict(),
            "hero": None if self.hero is None else self.hero.to_dict(),
            "reason": self.reason,
            "session_type": str(self.session_type),
            "part": self.part,
            "cut": self.cut,
            "clock_remaining_ms": self.clock_remaining_ms,
            "clock_ts_ms": self.clock_ts_ms,
            "clock_running": self.clock_running,
            "weather": None if self.weather is None else self.weather.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Leaderboard:
        data = dict(data)
        data["track_status"] = TrackStatus(data["track_status"])
        data["session_type"] = SessionKind(data.get("session_type") or "RACE")
        if data.get("weather") is not None:
            data["weather"] = WeatherNow(**data["weather"])
        data["rows"] = [LeaderboardRow.from_dict(r) for r in data["rows"]]
        if data.get("fastest_lap") is not None:
            data["fastest_lap"] = FastestLap(**data["fastest_lap"])
        if data.get("hero") is not None:
            data["hero"] = Hero(**data["hero"])
        return cls(**data)


@dataclass(slots=True)
class ClassifiedCar(_Record):
    position: int
    driver_number: int
    code: str
    laps: int
    status: str
    time_ms: int | None = None
    gap_ms: int | None = None
    gap_laps: int = 0


@dataclass(slots=True)
class RaceEvent(_Record):
    """``f1.race.events``: one discrete race event (key ``race_id``).

    ``event_id`` is derived from the facts of the event, never from a counter or a clock,
    so reprocessing the same input yields the same ids.
    """

    TOPIC: ClassVar[str] = "f1.race.events"

    event_id: str
    race_id: str
    type: EventType
    ts_ms: int
    lap: int
    driver_number: int | None = None
    code: str | None = None
    other_driver_number: int | None = None
    other_code: str | None = None
    overtake_kind: OvertakeKind | None = None
    under_safety_car: bool = False
    lap_time_ms: int | None = None
    pit_lane_ms: int | None = None
    track_status: TrackStatus | None = None
    position: int | None = None
    positions_gained: int | None = None
    provisional: bool = False
    classification: list[ClassifiedCar] | None = None
    message: str = ""
    clip_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["type"] = str(self.type)
        d["overtake_kind"] = None if self.overtake_kind is None else str(self.overtake_kind)
        d["track_status"] = None if self.track_status is None else str(self.track_status)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RaceEvent:
        data = dict(data)
        data["type"] = EventType(data["type"])
        if data.get("overtake_kind") is not None:
            data["overtake_kind"] = OvertakeKind(data["overtake_kind"])
        if data.get("track_status") is not None:
            data["track_status"] = TrackStatus(data["track_status"])
        if data.get("classification") is not None:
            data["classification"] = [ClassifiedCar(**c) for c in data["classification"]]
        return cls(**data)


@dataclass(slots=True)
class Stint(_Record):
    """``f1.driver.stints``: features of one stint (key ``race_id:driver_number``)."""

    TOPIC: ClassVar[str] = "f1.driver.stints"

    race_id: str
    driver_number: int
    stint: int
    compound: str | None
    start_lap: int
    end_lap: int
    length: int
    tyre_age_start: int
    laps_used: int
    open: bool
    median_pace_ms: int | None = None
    degradation_ms_per_lap: float | None = None
    degradation_stderr: float | None = None
    consistency_ms: float | None = None


@dataclass(slots=True)
class Recommendation(_Record):
    """``f1.strategy.recommendations``: a per-driver strategy call (key ``race_id:driver_number``)."""

    TOPIC: ClassVar[str] = "f1.strategy.recommendations"

    event_id: str
    race_id: str
    driver_number: int
    lap: int
    action: str
    pit_window_start: int | None = None
    pit_window_end: int | None = None
    compound: str | None = None
    undercut_threat: float | None = None
    overcut_chance: float | None = None
    expected_position: float | None = None
    model: str = "rule-based"
    explanation: str = ""


@dataclass(slots=True)
class Commentary(_Record):
    """``f1.race.commentary``: one short line of commentary (key ``race_id``)."""

    TOPIC: ClassVar[str] = "f1.race.commentary"

    event_id: str
    race_id: str
    ts_ms: int
    lap: int
    text: str
    source_event_id: str
    priority: int = 1


@dataclass(slots=True)
class DeadLetter(_Record):
    """``f1.deadletter``: a record that was rejected, with the reason and its original bytes."""

    TOPIC: ClassVar[str] = "f1.deadletter"

    source_topic: str
    reason: str
    error_type: str
    step: str
    received_at: datetime
    key: bytes | None = None
    value: bytes | None = None
    partition: int | None = None
    offset: int | None = None
    race_id: str | None = None


INPUT_TYPES: dict[str, type[_Record]] = {
    Session.TOPIC: Session,
    Lap.TOPIC: Lap,
    Telemetry.TOPIC: Telemetry,
    Control.TOPIC: Control,
    Weather.TOPIC: Weather,
}
OUTPUT_TYPES: dict[str, type[_Record]] = {
    Leaderboard.TOPIC: Leaderboard,
    RaceEvent.TOPIC: RaceEvent,
    Stint.TOPIC: Stint,
    Recommendation.TOPIC: Recommendation,
    Commentary.TOPIC: Commentary,
    DeadLetter.TOPIC: DeadLetter,
}
ALL_TYPES: dict[str, type[_Record]] = {**INPUT_TYPES, **OUTPUT_TYPES}
