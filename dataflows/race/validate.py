"""Field-level validation of input records, before any state sees them.

Each check returns ``None`` when the record is acceptable, otherwise the reason in words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas.model import Control, ControlKind, Lap, Session, Telemetry, Weather

#: a lap faster than this is not a racing lap (the fastest F1 laps are ~55 s)
MIN_PLAUSIBLE_LAP_MS = 20_000


def validate(record: object) -> str | None:
    """Why ``record`` is invalid, or ``None``.

    >>> validate(Lap("e", "r", 1, lap=3, crossing_ms=100_000, lap_time_ms=-5))
    'negative lap time -5 ms (lap 3 of car 1)'
    """
    check = _CHECKS.get(type(record))
    if check is None:
        return f"unsupported record type {type(record).__name__}"
    return check(record)


def _common(race_id: str, driver_number: int | None) -> str | None:
    if not race_id:
        return "empty race_id"
    if driver_number is not None and driver_number <= 0:
        return f"driver_number must be positive, got {driver_number}"
    return None


def _telemetry(t: Telemetry) -> str | None:
    if t.race_id and t.driver_number > 0 and t.ts_ms >= 0 and 0.0 <= t.progress < 1.0 and t.lap >= 1:
        return None  # the common case, in one expression
    if (why := _common(t.race_id, t.driver_number)) is not None:
        return why
    if t.ts_ms < 0:
        return f"negative session time {t.ts_ms} ms"
    if not 0.0 <= t.progress < 1.0:
        return f"progress must be in [0, 1), got {t.progress}"
    if t.lap < 1:
        return f"telemetry lap must be >= 1, got {t.lap}"
    return None


def _lap(lap: Lap) -> str | None:
    if (why := _common(lap.race_id, lap.driver_number)) is not None:
        return why
    if lap.lap < 1:
        return f"lap number must be >= 1, got {lap.lap}"
    if lap.crossing_ms < 0:
        return f"negative crossing time {lap.crossing_ms} ms (lap {lap.lap} of car {lap.driver_number})"
    if lap.lap_time_ms is not None:
        if lap.lap_time_ms < 0:
            return f"negative lap time {lap.lap_time_ms} ms (lap {lap.lap} of car {lap.driver_number})"
        if lap.lap_time_ms < MIN_PLAUSIBLE_LAP_MS:
            return (
                f"implausible lap time {lap.lap_time_ms} ms < {MIN_PLAUSIBLE_LAP_MS} ms "
                f"(lap {lap.lap} of car {lap.driver_number})"
            )
    for name in ("sector1_ms", "sector2_ms", "sector3_ms", "pit_lane_ms", "tyre_age"):
        value = getattr(lap, name)
        if value is not None and value < 0:
            return f"negative {name} {value} (lap {lap.lap} of car {lap.driver_number})"
    return None


def _control(c: Control) -> str | None:
    if (why := _common(c.race_id, c.driver_number)) is not None:
        return why
    if c.ts_ms < 0:
        return f"negative session time {c.ts_ms} ms"
    if c.kind is ControlKind.TRACK_STATUS and c.track_status is None:
        return "TRACK_STATUS message without track_status"
    if c.kind is ControlKind.RETIREMENT and c.driver_number is None:
        return "RETIREMENT message without driver_number"
    if c.kind in (ControlKind.LAP_DELETED, ControlKind.LAP_REINSTATED) and (
            c.driver_number is None or c.lap is None or c.lap < 1):
        return f"{c.kind} message without driver_number and lap"
    if c.kind in (ControlKind.PART_START, ControlKind.PART_END) and (c.part is None or not 1 <= c.part <= 3):
        return f"{c.kind} message without a part 1-3 (part={c.part})"
    if c.kind is ControlKind.TEAM_RADIO and c.driver_number is None:
        return "TEAM_RADIO message without driver_number"
    if c.kind is ControlKind.CLOCK and (c.remaining_ms is None or c.remaining_ms < 0):
        return f"CLOCK message without a time left (remaining_ms={c.remaining_ms})"
    return None


def _session(s: Session) -> str | None:
    if not s.race_id:
        return "empty race_id"
    if s.total_laps <= 0:
        return f"total_laps must be positive, got {s.total_laps}"
    if not s.drivers:
        return "session without drivers"
    numbers = [d.number for d in s.drivers]
    if len(set(numbers)) != len(numbers):
        return f"duplicate driver numbers in session: {sorted(numbers)}"
    if s.start_time.tzinfo is None:
        return "start_time must be timezone-aware"
    unknown = set(s.grid) - set(numbers)
    if unknown:
        return f"grid names unknown drivers {sorted(unknown)}"
    return None


def _weather(w: Weather) -> str | None:
    if (why := _common(w.race_id, None)) is not None:
        return why
    if w.ts_ms < 0:
        return f"negative session time {w.ts_ms} ms"
    if w.humidity_pct is not None and not 0 <= w.humidity_pct <= 100:
        return f"humidity {w.humidity_pct} % outside 0-100"
    if w.wind_direction_deg is not None and not 0 <= w.wind_direction_deg <= 360:
        return f"wind direction {w.wind_direction_deg} degrees outside 0-360"
    if w.wind_speed_ms is not None and w.wind_speed_ms < 0:
        return f"negative wind speed {w.wind_speed_ms} m/s"
    return None


_CHECKS: dict[type, Callable[[Any], str | None]] = {
    Telemetry: _telemetry, Lap: _lap, Control: _control, Session: _session, Weather: _weather,
}
