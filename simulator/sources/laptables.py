"""Lap tables as a source: a real race's lap table → racewire input records (pure, no I/O but
reading). ``racewire replay`` runs it through the pipeline (:mod:`infra.pipeline_run`).

Two table formats are understood, both normalised to :class:`LapRow`:

- the *tidy* lap table (``races/<race>/laps.csv``: ``driver_code, driver_number, team, lap,
  lap_time_ms, position, pit_in, compound, tyre_life_laps, track_status, fastf1_pit_in,
  fastf1_pit_out, ...``), optionally with ``results.json`` (grid, names, scheduled laps);
- a FastF1 lap table (the ``laps_pool`` format: ``Time, Driver, DriverNumber, LapTime (s),
  LapNumber, PitOutTime, PitInTime, Compound, TyreLife, Team, TrackStatus, Position,
  RoundNumber, EventName``), filtered by round.

:func:`build_race` then derives, from lap rows alone:

- crossing times: the table's session time at the end of the lap when it has one, else the
  cumulative lap times (red-flag waiting time is inside those lap times, so both agree);
- missing lap times (safety-car, red-flag and pit laps in FastF1) from crossing differences;
- the retiring car's unfinished last lap (FastF1 has a row for it with neither a lap time nor a
  position) is dropped: it is not a completed lap;
- ``TRACK_STATUS`` controls when the leader's lap status changes (codes 1,2,4,5,6,7; a lap that
  saw several takes the most severe), ``RETIREMENT`` for each car that stops completing laps
  before the flag (``lap`` = its laps completed + 1), ``CHEQUERED_FLAG`` at the winner's final
  crossing; lapped cars finish on fewer laps, at their first crossing after the flag.

Event ids depend only on the facts (``{race_id}:lap:{number}:{lap}``, ...), so a replay of the
same table yields the same ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from schemas.model import Control, ControlKind, Driver, Lap, Session, TrackStatus
from simulator.sources.base import (
    RecordedRace,
    chequered,
    default_race_id,
    lap_event_id,
    race_start,
    retirement,
    session_event_id,
)

#: most severe first: red flag, safety car, VSC, VSC ending, yellow, green
SEVERITY: tuple[str, ...] = ("5", "4", "6", "7", "2", "1")

#: team colours (hex without '#') of recent seasons, by the team names used in the tables
TEAM_COLOURS: dict[str, str] = {
    "Mercedes": "00D2BE", "Ferrari": "DC0000", "Red Bull": "0600EF", "Red Bull Racing": "0600EF",
    "McLaren": "FF8700", "Alpine": "0090FF", "Renault": "FFF500", "AlphaTauri": "2B4562",
    "Toro Rosso": "469BFF", "Aston Martin": "006F62", "Racing Point": "F596C8",
    "Force India": "F596C8", "Williams": "005AFF", "Alfa Romeo": "900000",
    "Alfa Romeo Racing": "900000", "Sauber": "9B0000", "Haas F1 Team": "FFFFFF",
    "Haas": "FFFFFF", "RB": "6692FF", "Kick Sauber": "52E252",
}


TIME_TOLERANCE_MS = 300_000
"""How far a row's session time may disagree with the previous crossing plus its lap time."""


class ReplayError(ValueError):
    """The table cannot be replayed; the message says what was wrong."""


@dataclass(slots=True)
class LapRow:
    """One row of a lap table, normalised (times in ms; ``None`` where the table has nothing)."""

    code: str
    number: int
    team: str
    lap: int
    lap_time_ms: int | None = None
    #: session time at the end of the lap, in the table's own time base
    time_ms: int | None = None
    position: int | None = None
    pit_in: bool = False
    pit_out: bool = False
    pit_in_time_ms: int | None = None
    pit_out_time_ms: int | None = None
    pit_lane_ms: int | None = None
    compound: str | None = None
    tyre_age: int | None = None
    #: the track status codes seen during the lap, e.g. ``"64"``
    track_codes: str = ""


@dataclass(slots=True)
class RaceMeta:
    """What the table does not say: names, grid, scheduled laps, start time."""

    name: str = "Grand Prix"
    circuit: str = ""
    start_time: datetime = field(default_factory=lambda: datetime(1970, 1, 1, tzinfo=UTC))
    grid: list[int] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    scheduled_laps: int | None = None
    track_length_m: int = 0
    source: str = "replay"


# ------------------------------------------------------------------------------ status codes


def most_severe(codes: str) -> TrackStatus:
    """The most severe status among the codes of a lap (unknown codes such as ``0`` are ignored).

    >>> most_severe("64")
    <TrackStatus.SC: 'SC'>
    >>> most_severe("")
    <TrackStatus.GREEN: 'GREEN'>
    """
    for code in SEVERITY:
        if code in codes:
            return TrackStatus.from_feed_code(code)
    return TrackStatus.GREEN


# ------------------------------------------------------------------------------ reading


def _timedelta_ms(col: str) -> pl.Expr:
    """``"0 days 01:04:15.422000"`` → milliseconds (null stays null)."""
    parts = pl.col(col).str.extract_groups(r"(?:(\d+) days )?(\d+):(\d+):(\d+(?:\.\d+)?)")
    return (
        parts.struct.field("1").cast(pl.Int64, strict=False).fill_null(0) * 86_400_000
        + parts.struct.field("2").cast(pl.Int64) * 3_600_000
        + parts.struct.field("3").cast(pl.Int64) * 60_000
        + (parts.struct.field("4").cast(pl.Float64) * 1000).round(0).cast(pl.Int64)
    )


def _truthy(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Utf8).str.to_lowercase().is_in(["true", "1", "yes"])


def _code_str(col: str) -> pl.Expr:
    """Track status codes as text (``24`` read as a number stays ``"24"``)."""
    return pl.col(col).cast(pl.Utf8).str.replace(r"\.0$", "").fill_null("")


def is_fastf1(frame: pl.DataFrame) -> bool:
    return {"Driver", "LapNumber", "LapTime"} <= set(frame.columns)


def tidy_rows(frame: pl.DataFrame) -> list[LapRow]:
    """Rows of a tidy lap table (the ``races/<race>/laps.csv`` format)."""
    need = {"driver_code", "driver_number", "lap", "lap_time_ms"}
    missing = need - set(frame.columns)
    if missing:
        raise ReplayError(f"tidy lap table lacks columns {sorted(missing)}; has {frame.columns}")
    cols = set(frame.columns)
    pit_in = "fastf1_pit_in" if "fastf1_pit_in" in cols else "pit_in"
    exprs: list[pl.Expr] = [
        pl.col("driver_code").cast(pl.Utf8).alias("code"),
        pl.col("driver_number").cast(pl.Int64).alias("number"),
        (pl.col("team").cast(pl.Utf8) if "team" in cols else pl.lit("")).alias("team"),
        pl.col("lap").cast(pl.Int64).alias("lap"),
        pl.col("lap_time_ms").cast(pl.Float64, strict=False).round(0).cast(pl.Int64).alias("lap_time_ms"),
        (pl.col("time_ms").cast(pl.Int64, strict=False) if "time_ms" in cols
         else pl.lit(None, pl.Int64)).alias("time_ms"),
        (pl.col("position").cast(pl.Float64, strict=False).cast(pl.Int64) if "position" in cols
         else pl.lit(None, pl.Int64)).alias("position"),
        (_truthy(pit_in) if pit_in in cols else pl.lit(False)).alias("pit_in"),
        (_truthy("fastf1_pit_out") if "fastf1_pit_out" in cols else pl.lit(False)).alias("pit_out"),
        (pl.col("ergast_pit_duration_ms").cast(pl.Float64, strict=False).cast(pl.Int64)
         if "ergast_pit_duration_ms" in cols else pl.lit(None, pl.Int64)).alias("pit_lane_ms"),
        (pl.col("compound").cast(pl.Utf8) if "compound" in cols else pl.lit(None, pl.Utf8)).alias("compound"),
        (pl.col("tyre_life_laps").cast(pl.Float64, strict=False).cast(pl.Int64)
         if "tyre_life_laps" in cols else pl.lit(None, pl.Int64)).alias("tyre_age"),
        (_code_str("track_status") if "track_status" in cols else pl.lit("")).alias("track_codes"),
    ]
    return [LapRow(**r) for r in frame.select(exprs).to_dicts()]


def fastf1_rows(frame: pl.DataFrame, round_number: int | None = None) -> list[LapRow]:
    """Rows of a FastF1 lap table (``laps_pool`` format), of one round when given."""
    if round_number is not None:
        if "RoundNumber" not in frame.columns:
            raise ReplayError("--round given but the table has no RoundNumber column")
        frame = frame.filter(pl.col("RoundNumber").cast(pl.Float64, strict=False) == round_number)
        if frame.is_empty():
            raise ReplayError(f"no laps of round {round_number} in the table")
    elif "RoundNumber" in frame.columns and frame["RoundNumber"].n_unique() > 1:
        raise ReplayError("the table holds several rounds: pass --round R (and --year Y for a folder)")
    cols = set(frame.columns)

    def opt_td(col: str) -> pl.Expr:
        return _timedelta_ms(col) if col in cols else pl.lit(None, pl.Int64)

    exprs: list[pl.Expr] = [
        pl.col("Driver").cast(pl.Utf8).alias("code"),
        pl.col("DriverNumber").cast(pl.Float64).cast(pl.Int64).alias("number"),
        (pl.col("Team").cast(pl.Utf8).fill_null("") if "Team" in cols else pl.lit("")).alias("team"),
        pl.col("LapNumber").cast(pl.Float64).cast(pl.Int64).alias("lap"),
        (pl.col("LapTime").cast(pl.Float64, strict=False) * 1000).round(0).cast(pl.Int64).alias("lap_time_ms"),
        opt_td("Time").alias("time_ms"),
        (pl.col("Position").cast(pl.Float64, strict=False).cast(pl.Int64) if "Position" in cols
         else pl.lit(None, pl.Int64)).alias("position"),
        opt_td("PitInTime").alias("pit_in_time_ms"),
        opt_td("PitOutTime").alias("pit_out_time_ms"),
        (pl.col("Compound").cast(pl.Utf8) if "Compound" in cols else pl.lit(None, pl.Utf8)).alias("compound"),
        (pl.col("TyreLife").cast(pl.Float64, strict=False).cast(pl.Int64) if "TyreLife" in cols
         else pl.lit(None, pl.Int64)).alias("tyre_age"),
        (_code_str("TrackStatus") if "TrackStatus" in cols else pl.lit("")).alias("track_codes"),
    ]
    rows = [LapRow(**r) for r in frame.select(exprs).to_dicts()]
    for r in rows:
        r.pit_in = r.pit_in_time_ms is not None
        r.pit_out = r.pit_out_time_ms is not None
        if r.compound in ("nan", "UNKNOWN", ""):
            r.compound = None
    return rows


def read_table(path: Path, year: int | None = None, round_number: int | None = None) -> tuple[list[LapRow], str]:
    """Read a lap table (tidy or FastF1; a ``laps_pool`` folder with ``--year``); returns the rows
    and the event name when the table has one."""
    if path.is_dir():
        if year is None:
            raise ReplayError(f"{path} is a folder: pass --year Y --round R to pick a race")
        found = sorted(path.rglob(f"*_{year}.csv"))
        if not found:
            raise ReplayError(f"no lap table for {year} in {path} (looked for *_{year}.csv)")
        path = found[0]
    frame = pl.read_csv(path, infer_schema_length=0)  # all text: columns are cast explicitly
    if is_fastf1(frame):
        rows = fastf1_rows(frame, round_number)
        name = ""
        if "EventName" in frame.columns:
            sel = frame if round_number is None else frame.filter(
                pl.col("RoundNumber").cast(pl.Float64, strict=False) == round_number)
            name = str(sel["EventName"][0])
        return rows, name
    return tidy_rows(frame), ""


def read_results(path: Path) -> RaceMeta:
    """Race metadata from a ``results.json`` (grid, names, scheduled laps, start time)."""
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    race = doc.get("race", {})
    meta = RaceMeta(name=race.get("name", "Grand Prix"), circuit=race.get("name", ""),
                    scheduled_laps=race.get("scheduled_laps"), source="replay:results")
    if race.get("date"):
        clock = race.get("start_time_utc") or "00:00:00"
        meta.start_time = datetime.fromisoformat(f"{race['date']}T{clock}").replace(tzinfo=UTC)
    grid = sorted(doc.get("grid", []), key=lambda g: (g.get("grid") or 99, g.get("driver_number")))
    meta.grid = [int(g["driver_number"]) for g in grid if (g.get("grid") or 0) > 0]
    meta.grid += [int(g["driver_number"]) for g in grid if not (g.get("grid") or 0) > 0]  # pit-lane starts
    for c in doc.get("classification", []):
        if c.get("driver"):
            meta.names[int(c["driver_number"])] = str(c["driver"])
    return meta


# ------------------------------------------------------------------------------ building


@dataclass(slots=True)
class CarLaps:
    """One car's completed laps after cleaning, with derived crossings."""

    code: str
    number: int
    team: str
    laps: list[LapRow]
    crossings: list[int]
    lap_times: list[int | None]
    #: session time (race time base) at which the car's unfinished last lap ended, if the table says
    stopped_ms: int | None = None


def _is_completed(row: LapRow) -> bool:
    return row.lap_time_ms is not None or row.position is not None


def race_start_ms(rows: list[LapRow]) -> int:
    """Session time of the start in the table's time base (0 when it has no session times)."""
    starts = [r.time_ms - r.lap_time_ms for r in rows
              if r.lap == 1 and r.time_ms is not None and r.lap_time_ms is not None]
    if starts:
        return min(starts)
    firsts = [r.time_ms for r in rows if r.lap == 1 and r.time_ms is not None]
    if firsts:
        times = sorted(r.lap_time_ms for r in rows if r.lap_time_ms is not None)
        typical = times[len(times) // 2] if times else 100_000
        return min(firsts) - typical
    return 0


def clean_cars(rows: list[LapRow]) -> list[CarLaps]:
    """Per car: completed laps in order, crossing times in race time (ms after the start), lap
    times (derived from crossing differences where the table has none)."""
    start = race_start_ms(rows)
    by_car: dict[int, list[LapRow]] = {}
    for r in rows:
        by_car.setdefault(r.number, []).append(r)
    cars = []
    for number, laps in by_car.items():
        laps.sort(key=lambda r: r.lap)
        stopped: int | None = None
        while laps and not _is_completed(laps[-1]):  # the unfinished lap of a retiring car
            last = laps.pop()
            if last.time_ms is not None:
                stopped = last.time_ms - start
        # keep the first unbroken run of laps 1..k (a gap means the rest cannot be placed)
        kept: list[LapRow] = []
        for r in laps:
            if r.lap != len(kept) + 1:
                if r.lap <= len(kept):
                    continue  # duplicate row
                break
            kept.append(r)
        crossings: list[int] = []
        lap_times: list[int | None] = []
        prev = 0
        for r in kept:
            if r.time_ms is not None and not _time_inconsistent(r, start, prev):
                crossing = r.time_ms - start
            elif r.lap_time_ms is not None:
                crossing = prev + r.lap_time_ms
            else:
                raise ReplayError(f"car {number} lap {r.lap}: neither a lap time nor a session time")
            if crossing <= prev:
                crossing = prev + 1  # clocks in real tables are not always monotonic
            lap_time = r.lap_time_ms if r.lap_time_ms is not None else crossing - prev
            crossings.append(crossing)
            lap_times.append(lap_time)
            prev = crossing
        team = next((r.team for r in laps if r.team), "")
        code = laps[0].code if laps else str(number)
        cars.append(CarLaps(code, number, team, kept, crossings, lap_times, stopped))
    return cars


def _time_inconsistent(row: LapRow, start: int, prev: int) -> bool:
    """A session time that contradicts the lap time by more than :data:`TIME_TOLERANCE_MS`
    (seen in FastF1: a lap-1 ``Time`` stamped at the end of the session). Not applied to
    red-flag laps, whose lap time may leave the wait out."""
    if row.time_ms is None or row.lap_time_ms is None or "5" in row.track_codes:
        return False
    return abs(row.time_ms - start - prev - row.lap_time_ms) > TIME_TOLERANCE_MS


def drop_unfinished_laps(cars: list[CarLaps], chequered_ms: int) -> None:
    """A car that never takes the flag and whose last row has no lap time of its own stopped
    during that lap (FastF1 keeps the row of the lap on which it crashed, sometimes with a
    position): it is not a completed lap."""
    for car in cars:
        if not car.crossings or car.crossings[-1] >= chequered_ms or car.stopped_ms is not None:
            continue  # took the flag, or its unfinished lap was already recognised
        if car.laps[-1].lap_time_ms is None:
            car.laps.pop()
            car.stopped_ms = car.crossings.pop()
            car.lap_times.pop()


def build_race(rows: list[LapRow], race_id: str, meta: RaceMeta | None = None) -> RecordedRace:
    """Turn lap rows into a race's input records (see the module docstring for the rules)."""
    meta = meta or RaceMeta()
    cars = [c for c in clean_cars(rows) if c.laps or c.stopped_ms is not None]
    if not any(c.laps for c in cars):
        raise ReplayError("the table has no completed laps")
    winner_laps = max(len(c.laps) for c in cars)
    leader_crossings: list[int] = []  # first crossing of each lap
    winner = min((c for c in cars if len(c.laps) == winner_laps), key=lambda c: c.crossings[-1])
    chequered_ms = winner.crossings[-1]
    drop_unfinished_laps(cars, chequered_ms)
    for lap in range(1, winner_laps + 1):
        leader_crossings.append(min(c.crossings[lap - 1] for c in cars if len(c.laps) >= lap))

    laps: list[Lap] = []
    for car in cars:
        for i, r in enumerate(car.laps):
            pit_lane = r.pit_lane_ms
            if pit_lane is None and r.pit_in_time_ms is not None and i + 1 < len(car.laps):
                out = car.laps[i + 1].pit_out_time_ms
                pit_lane = out - r.pit_in_time_ms if out is not None and out > r.pit_in_time_ms else None
            laps.append(Lap(
                event_id=lap_event_id(race_id, car.number, r.lap), race_id=race_id,
                driver_number=car.number, lap=r.lap, crossing_ms=car.crossings[i],
                lap_time_ms=car.lap_times[i], pit_in=r.pit_in, pit_out=r.pit_out and r.lap > 1,
                pit_lane_ms=pit_lane if r.pit_in else None, compound=r.compound or None,
                tyre_age=r.tyre_age, track_status=most_severe(r.track_codes)))

    controls: list[Control] = [race_start(race_id)]
    # track status from the leader's laps: a change at the start of the lap that first shows it
    leader_status: list[TrackStatus] = []
    first_by_lap: dict[int, LapRow] = {}
    for car in cars:
        for i, r in enumerate(car.laps):
            if car.crossings[i] == leader_crossings[r.lap - 1]:
                first_by_lap[r.lap] = r
    current = TrackStatus.GREEN
    for lap in range(1, winner_laps + 1):
        status = most_severe(first_by_lap[lap].track_codes) if lap in first_by_lap else current
        leader_status.append(status)
        if status != current:
            ts = leader_crossings[lap - 2] + 1 if lap > 1 else 1
            controls.append(Control(f"{race_id}:track:{lap}:{status}", race_id, ts,
                                    ControlKind.TRACK_STATUS, f"Track status {status} on lap {lap}",
                                    track_status=status, lap=lap))
            current = status
    for car in cars:
        done = len(car.laps)
        last = car.crossings[-1] if car.crossings else 0
        if car.crossings and last >= chequered_ms:
            continue  # took the flag (lapped cars on fewer laps)
        ts = car.stopped_ms if car.stopped_ms is not None and car.stopped_ms > last else last + 1
        controls.append(retirement(race_id, car.number, car.code, ts, done))
    controls.append(chequered(race_id, chequered_ms, winner_laps))

    grid = [n for n in meta.grid if any(c.number == n for c in cars)]
    if not grid:
        grid = _grid_from_lap1(cars)
    grid += [c.number for c in sorted(cars, key=lambda c: c.number) if c.number not in grid]
    drivers = [
        Driver(number=c.number, code=c.code, name=meta.names.get(c.number, c.code), team=c.team,
               team_colour=TEAM_COLOURS.get(c.team, "888888"))
        for c in sorted(cars, key=lambda c: grid.index(c.number))
    ]
    session = Session(
        event_id=session_event_id(race_id), race_id=race_id, name=meta.name,
        circuit=meta.circuit or meta.name, total_laps=winner_laps,
        track_length_m=meta.track_length_m, start_time=meta.start_time, drivers=drivers, grid=grid,
        source=meta.source)
    laps.sort(key=lambda lap: (lap.crossing_ms, lap.driver_number))
    return RecordedRace(race_id, session, laps, controls)


def _grid_from_lap1(cars: list[CarLaps]) -> list[int]:
    """Start order when no grid is known: lap-1 positions, else lap-1 crossing order."""
    def key(c: CarLaps) -> tuple[int, int]:
        if not c.laps:
            return (10_000, c.number)
        pos = c.laps[0].position
        return (pos if pos is not None else 1000 + c.crossings[0] // 1000, c.crossings[0])
    return [c.number for c in sorted(cars, key=key)]


def lap_table_race_id(path: Path, year: int | None, round_number: int | None) -> str:
    """``replay-<name>`` from the file or folder (and year/round)."""
    stem = path.parent.name if path.name in ("laps.csv",) else path.stem
    return default_race_id("replay", stem, *(str(x) for x in (year, round_number) if x is not None))


# ------------------------------------------------------------------------------ command line


def add_arguments(parser: Any) -> None:
    """``racewire replay PATH [--results results.json] [--year Y --round R] [--race-id ID]`` (the
    pipeline's own options are added by :mod:`infra.pipeline_run`)."""
    parser.add_argument("path", type=Path, help="lap table (tidy laps.csv or a FastF1 laps_pool csv/folder)")
    parser.add_argument("--results", type=Path, help="results.json with grid and race metadata")
    parser.add_argument("--year", type=int, help="season (to pick a file in a laps_pool folder)")
    parser.add_argument("--round", type=int, dest="round_number", help="round number in a FastF1 table")
    parser.add_argument("--race-id", help="race id (default derived from the path)")


def load_race(path: Path, results: Path | None = None, year: int | None = None,
              round_number: int | None = None, race_id: str | None = None) -> RecordedRace:
    """Read a table (and results) and build the race."""
    rows, event_name = read_table(path, year, round_number)
    meta = read_results(results) if results is not None else RaceMeta()
    if results is None and event_name:
        meta.name = meta.circuit = f"{year} {event_name}" if year else event_name
    return build_race(rows, race_id or lap_table_race_id(path, year, round_number), meta)
