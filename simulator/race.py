"""The synthetic race: a deterministic, seeded Formula 1 race that emits racewire input records.

:class:`RaceSimulator` yields :mod:`schemas.model` records in session-time order: one
:class:`~schemas.model.Session` at 0 ms, then telemetry every 250 ms per running car, a
:class:`~schemas.model.Lap` at every timing-line crossing and :class:`~schemas.model.Control`
messages (lights out, track status changes, retirements, chequered flag). After the records are
exhausted, :meth:`RaceSimulator.truth` gives the ground truth (see :mod:`simulator.truth`).

How a race unfolds (all of it seeded, nothing scripted per driver):

* **Pace.** A lap's target time = base lap + team deficit + driver delta + compound offset +
  tyre degradation (linear, then a cliff) + fuel load (cars get faster as fuel burns) + noise.
* **Motion.** Cars move in *reference time* along the track's speed profile (see
  :mod:`simulator.track`) at rate ``ref_lap / target``; telemetry follows from the profile.
* **Traffic.** A car that catches the car ahead (on the same lap, or a lap ahead) is held at a
  minimum following gap. At each DRS detection point a car within a second may attempt a pass
  with a probability that grows with its pace advantage (plus DRS), so trains form and
  overtakes are neither free nor impossible. Lapped cars yield (blue flags).
* **Pit stops.** One or two per car with compound changes, brought forward under SC/VSC; the
  lane crosses the timing line (the in-lap ends in the lane, flagged ``pit_in``; the next lap is
  the out-lap with ``pit_out`` and ``pit_lane_ms``). Team-mates stopping together queue.
* **Neutralisations.** A safety car leads a bunched field that cannot overtake; a VSC slows
  everyone by the same factor, keeping the gaps; a stopped car shows yellows and may bring
  either out.
* **Retirements.** A car limps and stops on track, or limps into the pits and stops in its box;
  its telemetry then stops and race control announces it.
* **Flag.** Once the leader completes the last lap, every other running car finishes at its
  next crossing of the line (lapped cars on fewer laps) and then produces nothing more.
"""

from __future__ import annotations

import json
import math
import random
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from schemas.model import (
    Control,
    ControlKind,
    Driver,
    InputRecord,
    Lap,
    Session,
    Telemetry,
    TrackStatus,
)
from simulator.track import (
    PIT_SPEED_KPH,
    TAU_RES_S,
    Track,
    default_track,
    gear_rpm_table,
    max_grid_size,
)
from simulator.truth import CarLog, Crossing, RaceLog, StatusPeriod, compute_truth

# ------------------------------------------------------------------------------ time
TICK_MS = 250
"""Simulation step and telemetry interval."""
TICK_S = TICK_MS / 1000
LIGHTS_OUT_MS = 10_000
"""Session time of the start; cars sit on the grid before it."""
START_TIME_BASE = datetime(2025, 3, 16, 15, 0, tzinfo=UTC)
START_TIME_WEEKS = 520
"""Seeds spread the (wall-clock) start over ten years of Sunday afternoons."""
MAX_RACE_LAP_FACTOR = 4.0
"""Safety stop: a race running longer than this many reference laps per lap is a bug."""

# ------------------------------------------------------------------------------ pace
BASE_LAP_RANGE_S = (87.5, 89.5)
"""Best car, fresh softs, empty tank: the race's base lap is drawn from this range."""
TEAM_PACE_JITTER_S = 0.2
DRIVER_SKILL_JITTER_S = 0.1
QUALI_NOISE_S = 0.12
LAP_NOISE_S = 0.22
LAP_NOISE_CLIP_S = 0.7
FUEL_EFFECT_RANGE_S = (0.03, 0.06)
"""Lap time per lap of fuel still on board."""


@dataclass(frozen=True, slots=True)
class CompoundModel:
    offset_s: float
    """Fresh-tyre deficit to the softest compound."""
    deg_s: float
    """Lap time lost per lap of tyre age."""
    cliff_lap: int
    """Tyre age beyond which the loss accelerates."""
    cliff_s: float
    """Extra loss per (lap beyond the cliff) squared."""


COMPOUNDS: dict[str, CompoundModel] = {
    "SOFT": CompoundModel(offset_s=0.0, deg_s=0.085, cliff_lap=18, cliff_s=0.03),
    "MEDIUM": CompoundModel(offset_s=0.45, deg_s=0.055, cliff_lap=28, cliff_s=0.025),
    "HARD": CompoundModel(offset_s=0.85, deg_s=0.035, cliff_lap=40, cliff_s=0.02),
}

# ------------------------------------------------------------------------------ strategy
ONE_STOP_PROB = 0.6
ONE_STOP_PLANS = (("MEDIUM", "HARD"), ("HARD", "MEDIUM"), ("SOFT", "HARD"), ("MEDIUM", "HARD"))
TWO_STOP_PLANS = (("SOFT", "MEDIUM", "MEDIUM"), ("MEDIUM", "HARD", "SOFT"), ("SOFT", "HARD", "MEDIUM"))
ONE_STOP_WINDOW = (0.36, 0.55)
TWO_STOP_WINDOWS = ((0.24, 0.36), (0.58, 0.72))
"""Planned in-laps as fractions of the race distance."""
FIRST_STOP_MIN_LAP = 2
LAST_STOP_MARGIN_LAPS = 3
"""No planned stop within this many laps of the end."""
MIN_STINT_LAPS = 2
SC_PIT_WINDOW_LAPS = 8
"""Under SC/VSC a car pits if its next stop was due within this many laps..."""
SC_PIT_PROB = 0.8
VSC_PIT_PROB = 0.55
"""...with these probabilities."""
PIT_STOP_MEAN_S = 2.5
PIT_STOP_SD_S = 0.3
PIT_STOP_MIN_S = 1.9
SLOW_STOP_PROB = 0.05
SLOW_STOP_EXTRA_S = (2.0, 8.0)
DOUBLE_STACK_GAP_S = 1.0
"""A team-mate queueing behind a car in the box waits this long after it leaves."""

# ------------------------------------------------------------------------------ traffic
FOLLOW_GAP_TAU = 0.35
"""Minimum following gap, in reference seconds (a car cannot get closer without passing)."""
START_GAP_TAU = 0.07
"""Following gap at lights out (below the grid spacing); it grows to the normal gap..."""
START_GAP_GROWTH_S = 80.0
"""...over this long, so the field strings out over the first lap."""
SC_GAP_TAU = 0.6
HOLD_RELAX = 0.2
"""Share of a too-small gap a held car recovers per tick."""
MIN_HELD_FRACTION = 0.6
"""A held car never drops below this share of the speed of the car ahead."""
MIN_PHYS_GAP_TAU = 0.04
INTERACTION_TAU = 3.0
"""Cars further apart than this do not interact."""
DRS_GAP_TAU = 1.0
"""Within this of the car ahead at a detection point: DRS (when enabled) and a pass attempt."""
DRS_ENABLE_AFTER_LAPS = 2
"""DRS opens after the leader completes this many laps, and as long again after a restart."""
DRS_BONUS_S = 0.35
LAP1_BONUS_S = 0.4
PASS_THRESHOLD_S = 0.45
PASS_SCALE_S = 1.0
PASS_P_MAX = 0.9
"""P(pass) = max x (1 - exp(-(advantage + bonuses - threshold) / scale)), advantage in s/lap."""
PASS_BOOST_RANGE = (0.03, 0.12)
"""Relative speed of a pass, split between attacker (faster) and defender (slower)."""
PASS_MARGIN_TAU = 0.1
BLUE_FLAG_TAU = 1.0
BLUE_FLAG_RATE = 0.97
"""A car about to be lapped loses a little time letting the faster car by."""
LAUNCH_RAMP_S = 3.6
LAUNCH_RAMP_SD_S = 0.35
LAUNCH_RAMP_MIN_S = 2.6
"""Standing start: a car reaches racing speed over its launch time (drawn per car)."""
PIT_EXIT_RAMP_S = 5.0
"""Leaving the pit lane, a car accelerates from the pit limiter to racing speed over this long."""

# ------------------------------------------------------------------------------ neutralisations
VSC_SPEED_FACTOR = 0.65
SC_RATE = 1 / 1.55
"""The safety car laps 55 % slower than the reference lap..."""
SC_CATCHUP_RATE = 0.85
"""...and the field closes up on it at most this fast."""
SC_AHEAD_TAU = 2.0
SC_LAPS = (2, 4)
"""Leader laps behind the safety car before 'SAFETY CAR IN THIS LAP'."""
VSC_DURATION_S = (40.0, 120.0)
VSC_ENDING_S = (10.0, 15.0)
REFERENCE_LAPS = 50
INCIDENTS_PER_50_LAPS = 0.8
"""Expected debris incidents (SC or VSC) in a race of ``REFERENCE_LAPS``."""
INCIDENT_SC_PROB = 0.5
INCIDENT_MARGIN_LAPS = 2
STOPPED_CAR_VSC_PROB = 0.45
STOPPED_CAR_SC_PROB = 0.3
ESCALATION_DELAY_S = (4.0, 12.0)
YELLOW_CLEAR_S = (30.0, 90.0)

# ------------------------------------------------------------------------------ retirements
RETIRE_PROB_PER_50_LAPS = 0.05
"""Chance that a car fails in a race of ``REFERENCE_LAPS`` (scaled with the distance)."""
FAILURES: tuple[tuple[str, float, tuple[float, float]], ...] = (
    ("stop", 0.35, (0.1, 0.8)),
    ("limp", 0.25, (0.1, 0.5)),
    ("pits", 0.40, (0.3, 0.85)),
)
"""Failure kinds with their probability and where on the lap (fraction) they strike: a car
stops soon after (``stop``), limps most of the way round and stops short of the pits
(``limp``), or limps into the pits and retires in its box (``pits``)."""
STOP_LIMP_FRACTION = (0.02, 0.1)
"""A ``stop`` failure limps this share of a lap before the car pulls over."""
LIMP_STOP_PROGRESS = (0.8, 0.95)
"""A ``limp`` failure ends at this fraction of the lap."""
LIMP_SPEED_FACTOR = (0.35, 0.6)
STOP_DECEL_S = 4.0
TRACK_LIMITS_PROB = 0.006
TRACK_LIMITS_GAIN_S = 0.35

# ------------------------------------------------------------------------------ telemetry
LIFT_THRESHOLD = 0.97
LIFT_THROTTLE_EXP = 3
PIT_THROTTLE = 22.0

SEVERITY: dict[TrackStatus, int] = {
    TrackStatus.GREEN: 0,
    TrackStatus.YELLOW: 1,
    TrackStatus.VSC_ENDING: 2,
    TrackStatus.VSC: 3,
    TrackStatus.SC: 4,
    TrackStatus.RED: 5,
}
_BY_SEVERITY = {v: k for k, v in SEVERITY.items()}
STATUS_MESSAGES: dict[TrackStatus, str] = {
    TrackStatus.GREEN: "TRACK CLEAR",
    TrackStatus.YELLOW: "YELLOW FLAG",
    TrackStatus.SC: "SAFETY CAR DEPLOYED",
    TrackStatus.VSC: "VIRTUAL SAFETY CAR DEPLOYED",
    TrackStatus.VSC_ENDING: "VIRTUAL SAFETY CAR ENDING",
    TrackStatus.RED: "RED FLAG",
}

# record ranks at equal session time
_RANK_SESSION, _RANK_CONTROL, _RANK_LAP, _RANK_TELEMETRY = 0, 1, 2, 3

# car modes
_GRID, _RACING, _PIT, _LIMP, _STOPPING, _RETIRED, _FINISHED = range(7)
# waypoint kinds
_WP_S1, _WP_S2, _WP_PIT, _WP_DETECT, _WP_ZSTART, _WP_ZEND, _WP_LINE = range(7)


@dataclass(frozen=True, slots=True)
class Entrant:
    """One car of the entry list (from ``grid.json``)."""

    number: int
    code: str
    name: str
    team: str
    team_colour: str
    team_index: int
    team_pace_s: float
    skill_s: float

    def driver(self) -> Driver:
        return Driver(self.number, self.code, self.name, self.team, self.team_colour)


def load_grid(grid_file: str | Path | None = None) -> list[Entrant]:
    """Read the entry list; ``None`` reads the bundled ``simulator/data/grid.json``."""
    if grid_file is None:
        text = resources.files("simulator").joinpath("data", "grid.json").read_text("utf-8")
    else:
        text = Path(grid_file).read_text(encoding="utf-8")
    data = json.loads(text)
    teams = {t["name"]: (i, t) for i, t in enumerate(data["teams"])}
    out: list[Entrant] = []
    for d in data["drivers"]:
        if d["team"] not in teams:
            raise ValueError(f"driver {d['code']} races for unknown team {d['team']!r} in grid file")
        index, team = teams[d["team"]]
        out.append(Entrant(
            number=int(d["number"]), code=str(d["code"]), name=str(d["name"]), team=team["name"],
            team_colour=str(team["colour"]), team_index=index,
            team_pace_s=float(team.get("pace_s", 0.0)), skill_s=float(d.get("skill_s", 0.0)),
        ))
    numbers = [e.number for e in out]
    if len(set(numbers)) != len(numbers):
        raise ValueError("grid file has duplicate car numbers")
    if not 2 <= len(out) <= max_grid_size():
        raise ValueError(f"grid file has {len(out)} cars; 2 to {max_grid_size()} fit on the grid")
    return out


class RaceSimulator:
    """A deterministic synthetic race.

    >>> sim = RaceSimulator("sim-doc", seed=7, laps=3)
    >>> records = list(sim.records())
    >>> type(records[0]).__name__, len(sim.session.drivers)
    ('Session', 20)
    >>> sim.truth()["classification"][0]["status"]
    'Finished'
    """

    def __init__(
        self, race_id: str, seed: int, laps: int, grid_file: str | Path | None = None
    ) -> None:
        if laps < 1:
            raise ValueError(f"laps must be at least 1, got {laps}")
        self.race_id = race_id
        self.seed = seed
        self.laps = laps
        self.entrants = load_grid(grid_file)
        self.track = default_track()
        self.session: Session = _Race(self).session
        self._truth: dict[str, Any] | None = None

    def records(self) -> Iterator[InputRecord]:
        """Every record of the race in session-time order (a fresh, identical run per call)."""
        race = _Race(self)
        yield from race.run()
        self._truth = compute_truth(race.log())

    def truth(self) -> dict[str, Any]:
        """Ground truth of the race; available once :meth:`records` has been exhausted."""
        if self._truth is None:
            raise RuntimeError("the race has not been run yet: exhaust records() first")
        return self._truth


class _Car:
    """Mutable state of one car (slots: this is touched every tick)."""

    __slots__ = (
        "blue_tick", "box_d", "code", "compound", "defend", "drs_armed", "drs_open", "eff_rate",
        "entrant", "fail_kind", "fail_rho", "grid_position", "grid_s", "lane_d", "lane_entry_ms",
        "lane_line_done", "lap_cut", "lap_pit_lane_ms", "lap_pit_out", "lap_sev", "lap_start_ms",
        "lap_target", "laps_done", "launch_s", "limp_factor", "log", "mode", "next_compound",
        "number", "pace_s", "pass_boost", "pass_target", "phys", "pit_pending", "plan",
        "ramp_floor", "ramp_from", "ramp_until", "rate_free", "retired_ms", "retiring", "rho",
        "rho0", "s1_ms", "s2_ms", "serviced", "stop_rho", "stop_s", "stop_start", "stop_until",
        "tau", "tau0", "tel_prefix", "tyre_age", "wp_idx", "wp_tau",
    )

    def __init__(self, entrant: Entrant, race_id: str) -> None:
        self.entrant = entrant
        self.number = entrant.number
        self.code = entrant.code
        self.tel_prefix = f"{race_id}:tel:{entrant.number}:"
        self.mode = _GRID
        self.grid_position = 0
        self.grid_s = 0.0
        self.pace_s = 0.0
        self.launch_s = LAUNCH_RAMP_S
        self.ramp_from = self.ramp_until = 0.0
        self.ramp_floor = 0.0
        self.laps_done = 0
        self.tau = self.tau0 = 0.0
        self.rho = self.rho0 = 0.0
        self.eff_rate = 0.0
        self.rate_free = 1.0
        self.lap_target = 0.0
        self.wp_idx = 0
        self.wp_tau = 0.0
        self.phys = 0
        self.lap_start_ms = LIGHTS_OUT_MS
        self.s1_ms = self.s2_ms = LIGHTS_OUT_MS
        self.lap_sev = 0
        self.lap_cut = False
        self.lap_pit_out = False
        self.lap_pit_lane_ms: int | None = None
        self.compound = "MEDIUM"
        self.next_compound: str | None = None
        self.tyre_age = 0
        self.plan: list[tuple[int, str]] = []
        self.pit_pending = False
        self.retiring = False
        self.lane_d = 0.0
        self.lane_line_done = False
        self.lane_entry_ms = 0
        self.box_d = 0.0
        self.stop_s = 0.0
        self.stop_until: float | None = None
        self.serviced = False
        self.pass_target: _Car | None = None
        self.pass_boost = 0.0
        self.defend = 0.0
        self.drs_armed = False
        self.drs_open = False
        self.blue_tick = -1
        self.fail_kind: str | None = None
        self.fail_rho = math.inf
        self.limp_factor = 1.0
        self.stop_rho = math.inf
        self.stop_start = 0.0
        self.retired_ms: int | None = None
        self.log: list[Crossing] = []


@dataclass(slots=True)
class _Incident:
    at_laps: float
    """Leader race progress (laps) at which it happens."""
    status: TrackStatus


class _Race:
    """One run of the simulation (all state; the generator lives in :meth:`run`)."""

    def __init__(self, sim: RaceSimulator) -> None:
        self.race_id = sim.race_id
        self.seed = sim.seed
        self.laps = sim.laps
        self.track: Track = sim.track
        self.T = self.track.ref_lap_s
        self.rng = random.Random(sim.seed)
        rng = self.rng
        self.base_lap = rng.uniform(*BASE_LAP_RANGE_S)
        self.fuel_s = rng.uniform(*FUEL_EFFECT_RANGE_S)
        self.cars = [_Car(e, sim.race_id) for e in sim.entrants]
        # qualifying decides the grid
        team_pace = {e.team_index: e.team_pace_s + rng.gauss(0.0, TEAM_PACE_JITTER_S)
                     for e in sim.entrants}
        quali: list[tuple[float, int]] = []
        for i, car in enumerate(self.cars):
            e = car.entrant
            car.pace_s = team_pace[e.team_index] + e.skill_s + rng.gauss(0.0, DRIVER_SKILL_JITTER_S)
            quali.append((car.pace_s + rng.gauss(0.0, QUALI_NOISE_S), i))
        self.grid = [self.cars[i] for _, i in sorted(quali)]
        for pos, car in enumerate(self.grid):
            car.grid_position = pos + 1
            car.grid_s = self.track.grid_slot_s(pos)
            car.tau = car.tau0 = self.track.tau_of_s(car.grid_s)
            car.rho = car.rho0 = car.tau
            car.launch_s = max(LAUNCH_RAMP_MIN_S, rng.gauss(LAUNCH_RAMP_S, LAUNCH_RAMP_SD_S))
            self._plan_strategy(car)
            self._plan_failure(car)
        self.incidents = self._plan_incidents()
        self.session = Session(
            event_id=f"{self.race_id}:session",
            race_id=self.race_id,
            name=f"{self.track.name} Grand Prix",
            circuit=self.track.name,
            total_laps=self.laps,
            track_length_m=self.track.length_m,
            start_time=START_TIME_BASE + timedelta(weeks=self.seed % START_TIME_WEEKS),
            drivers=[c.entrant.driver() for c in self.grid],
            grid=[c.number for c in self.grid],
            track_outline=self.track.outline(),
            pit_loss_ms=round(self._pit_loss_s() * 1000),
            source="simulator",
        )
        # waypoints along the lap, in reference time
        wps: list[tuple[float, int, int]] = [
            (self.track.sector_taus[0], _WP_S1, 0),
            (self.track.sector_taus[1], _WP_S2, 0),
            (self.track.pit.entry_tau, _WP_PIT, 0),
        ]
        for z, zone in enumerate(self.track.drs_zones):
            wps += [(zone.detect_tau, _WP_DETECT, z), (zone.start_tau, _WP_ZSTART, z),
                    (zone.end_tau, _WP_ZEND, z)]
        wps.sort()
        wps.append((self.T, _WP_LINE, 0))
        self.wps = wps
        self.wp_taus = [w[0] for w in wps]
        # race state
        self.status = TrackStatus.GREEN
        self.status_since_ms = 0
        self.status_since_lap = 1
        self.periods: list[StatusPeriod] = []
        self.timer: tuple[int, TrackStatus] | None = None
        self.sc_tau: float | None = None
        self.sc_deploy_laps = 0
        self.sc_laps = 0
        self.sc_in = False
        self.restart_ms = 0
        self.drs_from_laps = DRS_ENABLE_AFTER_LAPS
        self.lead_laps = 0
        self.flag_ms: int | None = None
        self.started = False
        self.tick = 0
        self.running: list[_Car] = []
        self.box_free: dict[int, float] = {}
        self.rc_seq = 0
        self.out_seq = 0
        self.pending: list[tuple[int, int, int, InputRecord]] = []
        self.crossings: list[tuple[int, int, _Car, bool]] = []
        self.gear_rpm = gear_rpm_table()

    def _pit_loss_s(self) -> float:
        """Typical stop: the lane against racing, plus accelerating back up to speed."""
        floor = min(1.0, PIT_SPEED_KPH / self.track.speed_kph_at(self.track.pit.exit_s))
        return self.track.pit_loss_s() + PIT_EXIT_RAMP_S * (1.0 - floor) / 2

    # ------------------------------------------------------------------ planning
    def _plan_strategy(self, car: _Car) -> None:
        rng, laps = self.rng, self.laps
        compounds: tuple[str, ...]
        if rng.random() < ONE_STOP_PROB:
            compounds = rng.choice(ONE_STOP_PLANS)
            fractions = [rng.uniform(*ONE_STOP_WINDOW)]
        else:
            compounds = rng.choice(TWO_STOP_PLANS)
            fractions = [rng.uniform(*w) for w in TWO_STOP_WINDOWS]
        car.compound = compounds[0]
        plan: list[tuple[int, str]] = []
        last = 0
        for frac, compound in zip(fractions, compounds[1:], strict=True):
            lap = round(laps * frac)
            if lap < max(FIRST_STOP_MIN_LAP, last + MIN_STINT_LAPS):
                continue
            if lap > laps - LAST_STOP_MARGIN_LAPS:
                break
            plan.append((lap, compound))
            last = lap
        car.plan = plan

    def _plan_failure(self, car: _Car) -> None:
        rng, laps = self.rng, self.laps
        p = min(1.0, RETIRE_PROB_PER_50_LAPS * laps / REFERENCE_LAPS)
        roll, lap_u, kind_u, prog_u = rng.random(), rng.random(), rng.random(), rng.random()
        if roll >= p or laps < 3:
            return
        lap = 2 + int(lap_u * (laps - 2))  # 2 .. laps-1
        kind, (lo, hi) = FAILURES[-1][0], FAILURES[-1][2]
        cum = 0.0
        for name, prob, where in FAILURES:
            cum += prob
            if kind_u < cum:
                kind, (lo, hi) = name, where
                break
        car.fail_kind = kind
        progress = lo + (hi - lo) * prog_u
        car.fail_rho = (lap - 1) * self.T + self.track.tau_of_s(progress * self.track.length_m)

    def _plan_incidents(self) -> list[_Incident]:
        rng, laps = self.rng, self.laps
        expected = INCIDENTS_PER_50_LAPS * laps / REFERENCE_LAPS
        # Poisson draw by inversion (random.Random has no poisson)
        n, p, u = 0, math.exp(-expected), rng.random()
        cum = p
        while u > cum and n < laps:
            n += 1
            p *= expected / n
            cum += p
        out: list[_Incident] = []
        lo, hi = INCIDENT_MARGIN_LAPS, laps - INCIDENT_MARGIN_LAPS
        for _ in range(n):
            at, kind_u = rng.uniform(lo, hi), rng.random()
            if hi > lo:
                out.append(_Incident(at, TrackStatus.SC if kind_u < INCIDENT_SC_PROB
                                     else TrackStatus.VSC))
        out.sort(key=lambda i: i.at_laps)
        return out

    # ------------------------------------------------------------------ output helpers
    def _emit(self, ts: int, rank: int, record: InputRecord) -> None:
        self.out_seq += 1
        self.pending.append((ts, rank, self.out_seq, record))

    def _control(
        self, ts: int, kind: ControlKind, message: str, status: TrackStatus | None = None,
        driver: int | None = None, lap: int | None = None,
    ) -> None:
        self.rc_seq += 1
        if lap is None:
            lap = min(self.lead_laps + 1, self.laps)
        self._emit(ts, _RANK_CONTROL, Control(
            f"{self.race_id}:rc:{self.rc_seq}", self.race_id, ts, kind, message, status, driver, lap,
        ))

    def _set_status(self, ts: int, status: TrackStatus, message: str | None = None) -> None:
        if status == self.status:
            return
        lap = min(self.lead_laps + 1, self.laps)
        if self.status != TrackStatus.GREEN:
            self.periods.append(StatusPeriod(str(self.status), self.status_since_ms, ts,
                                             self.status_since_lap, lap))
        self.status, self.status_since_ms, self.status_since_lap = status, ts, lap
        self._control(ts, ControlKind.TRACK_STATUS, message or STATUS_MESSAGES[status], status)
        sev = SEVERITY[status]
        green = status == TrackStatus.GREEN
        for car in self.running:
            if car.lap_sev < sev:
                car.lap_sev = sev
            if not green:  # no DRS and no passing: a pass under way is called off
                car.drs_armed = car.drs_open = False
                car.pass_target = None
                car.defend = 0.0
        if status != TrackStatus.SC:
            self.sc_tau = None

    def _deploy(self, ts: int, status: TrackStatus, reason: str = "") -> None:
        rng = self.rng
        self.timer = None
        if status == TrackStatus.SC:
            leader = next((c for c in self.running if c.mode == _RACING), None)
            base = leader.tau if leader is not None else 0.0
            self._set_status(ts, status, STATUS_MESSAGES[status] + reason)
            self.sc_tau = (base + SC_AHEAD_TAU) % self.T
            self.sc_deploy_laps = self.lead_laps
            self.sc_laps = rng.randint(*SC_LAPS)
            self.sc_in = False
        elif status == TrackStatus.VSC:
            self._set_status(ts, status, STATUS_MESSAGES[status] + reason)
            self.timer = (ts + round(rng.uniform(*VSC_DURATION_S) * 1000), TrackStatus.VSC_ENDING)

    # ------------------------------------------------------------------ the run
    def run(self) -> Iterator[InputRecord]:
        yield self.session
        limit_ms = LIGHTS_OUT_MS + int(MAX_RACE_LAP_FACTOR * self.T * 1000) * (self.laps + 1)
        while True:
            t0 = self.tick * TICK_MS
            if t0 == LIGHTS_OUT_MS:
                self._lights_out(t0)
            if self.started:
                self._race_control(t0)
            if self.pending:
                self.pending.sort()
                for item in self.pending:
                    yield item[3]
                self.pending.clear()
            if self.started and not self.running:
                return
            if t0 > limit_ms:
                raise RuntimeError(f"race {self.race_id} (seed {self.seed}) did not finish")
            yield from self._telemetry(t0)
            if self.started:
                self._move(t0)
                self._process_crossings()
            self.tick += 1

    def _lights_out(self, t0: int) -> None:
        self.started = True
        self.running = list(self.grid)
        for car in self.running:
            car.mode = _RACING
            car.lap_start_ms = car.s1_ms = car.s2_ms = t0
            car.ramp_from, car.ramp_until, car.ramp_floor = t0 / 1000, t0 / 1000 + car.launch_s, 0.0
            car.wp_idx = bisect_right(self.wp_taus, car.tau)
            car.wp_tau = self.wp_taus[car.wp_idx]
            self._start_lap(car)
        self._control(t0, ControlKind.RACE_START, "LIGHTS OUT")

    def _race_control(self, t0: int) -> None:
        if self.flag_ms is not None:
            return
        if self.timer is not None and t0 >= self.timer[0]:
            action = self.timer[1]
            self.timer = None
            if action == TrackStatus.VSC_ENDING:
                self._set_status(t0, TrackStatus.VSC_ENDING)
                self.timer = (t0 + round(self.rng.uniform(*VSC_ENDING_S) * 1000),
                              TrackStatus.GREEN)
            elif action == TrackStatus.GREEN:
                self._set_status(t0, TrackStatus.GREEN)
            else:
                self._deploy(t0, action)
        if self.incidents and self.running:
            lead = self.running[0].rho / self.T
            if lead >= self.incidents[0].at_laps:
                incident = self.incidents.pop(0)
                if self.status in (TrackStatus.GREEN, TrackStatus.YELLOW):
                    self._deploy(t0, incident.status, " - DEBRIS ON TRACK")

    # ------------------------------------------------------------------ lap bookkeeping
    def _start_lap(self, car: _Car) -> None:
        """New lap: reset timing and draw its target time."""
        rng = self.rng
        car.lap_sev = SEVERITY[self.status]
        car.lap_pit_out = False
        car.lap_pit_lane_ms = None
        model = COMPOUNDS[car.compound]
        age = car.tyre_age + 0.5
        deg = model.deg_s * age + model.cliff_s * max(0.0, age - model.cliff_lap) ** 2
        noise = max(-LAP_NOISE_CLIP_S, min(LAP_NOISE_CLIP_S, rng.gauss(0.0, LAP_NOISE_S)))
        car.lap_cut = car.laps_done > 0 and rng.random() < TRACK_LIMITS_PROB
        target = (self.base_lap + car.pace_s + model.offset_s + deg
                  + self.fuel_s * (self.laps - car.laps_done) + noise)
        if car.lap_cut:
            target -= TRACK_LIMITS_GAIN_S
        car.lap_target = target
        car.rate_free = self.T / target

    def _process_crossings(self) -> None:
        """Laps completed during the last tick, in time order (the flag and the SC depend on it)."""
        if not self.crossings:
            return
        self.crossings.sort(key=lambda c: (c[0], c[1]))
        for t_ms, _, car, in_lane in self.crossings:
            self._complete_lap(car, t_ms, in_lane)
        self.crossings.clear()

    def _complete_lap(self, car: _Car, t_ms: int, in_lane: bool) -> None:
        lap = car.laps_done
        finishing = self.flag_ms is not None
        if not finishing and lap >= self.laps:
            self.flag_ms = t_ms
            finishing = True
            self._control(t_ms, ControlKind.CHEQUERED_FLAG, "CHEQUERED FLAG")
        if lap > self.lead_laps:
            self.lead_laps = lap
            if not finishing:
                self._leader_crossed(t_ms)
        status = _BY_SEVERITY[car.lap_sev]
        deleted = car.lap_cut and not (in_lane or car.lap_pit_out or finishing)
        car.tyre_age += 1
        lap_time = t_ms - car.lap_start_ms
        record = Lap(
            f"{self.race_id}:lap:{car.number}:{lap}", self.race_id, car.number, lap, t_ms,
            lap_time, car.s1_ms - car.lap_start_ms, car.s2_ms - car.s1_ms, t_ms - car.s2_ms,
            in_lane, car.lap_pit_out, car.lap_pit_lane_ms, car.compound, car.tyre_age, status,
            deleted,
        )
        self._emit(t_ms, _RANK_LAP, record)
        car.log.append(Crossing(lap, t_ms, lap_time, in_lane, car.lap_pit_out, str(status),
                                deleted))
        if deleted:
            self._control(
                t_ms, ControlKind.MESSAGE,
                f"CAR {car.number} ({car.code}) TIME {_fmt_lap(lap_time)} DELETED - TRACK LIMITS"
                f" - LAP {lap}", driver=car.number,
            )
        if finishing:
            car.mode = _FINISHED
            self.running.remove(car)
            return
        car.lap_start_ms = t_ms
        if in_lane and car.next_compound is not None:
            car.compound, car.next_compound, car.tyre_age = car.next_compound, None, 0
        self._start_lap(car)

    def _leader_crossed(self, t_ms: int) -> None:
        """Safety-car phases advance as the leader crosses the line."""
        if self.status != TrackStatus.SC:
            return
        if self.sc_in:
            self._set_status(t_ms, TrackStatus.GREEN, "TRACK CLEAR - SAFETY CAR IN")
            self.restart_ms = t_ms
            self.drs_from_laps = self.lead_laps + DRS_ENABLE_AFTER_LAPS
        elif self.lead_laps - self.sc_deploy_laps >= self.sc_laps:
            self.sc_in = True
            self._control(t_ms, ControlKind.MESSAGE, "SAFETY CAR IN THIS LAP")

    def _retire(self, car: _Car, t_ms: int, on_track: bool) -> None:
        car.mode = _RETIRED  # dropped from ``running`` at the end of the tick
        car.retired_ms = t_ms
        for other in self.running:
            if other.pass_target is car:
                other.pass_target = None
        self._control(t_ms, ControlKind.RETIREMENT, f"CAR {car.number} ({car.code}) RETIRED",
                      driver=car.number, lap=car.laps_done + 1)
        if on_track and self.flag_ms is None and self.status == TrackStatus.GREEN:
            rng = self.rng
            self._set_status(t_ms, TrackStatus.YELLOW,
                             f"YELLOW FLAG - CAR {car.number} ({car.code}) STOPPED ON TRACK")
            roll, delay = rng.random(), rng.uniform(*ESCALATION_DELAY_S)
            if roll < STOPPED_CAR_VSC_PROB:
                self.timer = (t_ms + round(delay * 1000), TrackStatus.VSC)
            elif roll < STOPPED_CAR_VSC_PROB + STOPPED_CAR_SC_PROB:
                self.timer = (t_ms + round(delay * 1000), TrackStatus.SC)
            else:
                self.timer = (t_ms + round(rng.uniform(*YELLOW_CLEAR_S) * 1000),
                              TrackStatus.GREEN)

    # ------------------------------------------------------------------ motion
    def _gap_min(self, t0: int) -> float:
        if self.status == TrackStatus.SC:
            return SC_GAP_TAU
        since = (t0 - LIGHTS_OUT_MS) / 1000
        if since >= START_GAP_GROWTH_S:
            return FOLLOW_GAP_TAU
        return START_GAP_TAU + (FOLLOW_GAP_TAU - START_GAP_TAU) * since / START_GAP_GROWTH_S

    def _move(self, t0: int) -> None:
        """Advance every running car by one tick (the hot loop, kept in one place on purpose)."""
        T = self.T
        dt = TICK_S
        tick = self.tick
        running = self.running
        for car in running:
            car.tau0, car.rho0 = car.tau, car.rho
        on_track = [c for c in running if c.mode != _PIT]
        on_track.sort(key=lambda c: c.tau)
        for k, car in enumerate(on_track):
            car.phys = k
        n_track = len(on_track)
        status = self.status
        vsc = status in (TrackStatus.VSC, TrackStatus.VSC_ENDING)
        sc = status == TrackStatus.SC
        gap_min = self._gap_min(t0)
        t_mid = (t0 + TICK_MS / 2) / 1000
        sc_tau0 = self.sc_tau
        sc_tau1: float | None = None
        if sc_tau0 is not None:
            sc_tau1 = sc_tau0 + SC_RATE * dt
            if self.sc_in and sc_tau0 < self.track.pit.entry_tau <= sc_tau1:
                self.sc_tau = sc_tau1 = None  # the safety car peels off into the pit lane
            else:
                sc_tau1 %= T
                self.sc_tau = sc_tau1
        for order, car in enumerate(running):
            mode = car.mode
            if mode == _PIT:
                self._lane_step(car, t0, order)
                continue
            tau0 = car.tau0
            if mode == _RACING:
                r = car.rate_free
                if vsc:
                    r *= VSC_SPEED_FACTOR
                elif sc and r > SC_CATCHUP_RATE:
                    r = SC_CATCHUP_RATE
                if t_mid < car.ramp_until:  # accelerating: standing start or pit exit
                    share = (t_mid - car.ramp_from) / (car.ramp_until - car.ramp_from)
                    r *= car.ramp_floor + (1.0 - car.ramp_floor) * max(share, 0.0)
                if car.blue_tick == tick:
                    r *= BLUE_FLAG_RATE
                if car.pass_target is not None:
                    r *= 1.0 + car.pass_boost
                elif car.defend:
                    r *= 1.0 - car.defend
                desired = r * dt
                adv = desired
                # the car physically ahead that holds this one up
                cons: _Car | None = None
                d_cons = math.inf
                g_cons = 0.0
                k = car.phys
                for step in range(1, n_track):
                    j = on_track[(k + step) % n_track]
                    g0 = (j.tau0 - tau0) % T
                    if g0 > INTERACTION_TAU:
                        break
                    if j.mode != _RACING or j is car.pass_target:
                        continue
                    if j.rho0 < car.rho0:  # a lapped car: blue flags, it yields
                        if g0 < BLUE_FLAG_TAU:
                            j.blue_tick = tick
                        continue
                    cons, g_cons, d_cons = j, g0, (j.tau - tau0) % T
                    break
                gap = gap_min
                if sc_tau1 is not None and sc_tau0 is not None:
                    d_sc = (sc_tau1 - tau0) % T
                    if d_sc < INTERACTION_TAU and d_sc < d_cons:
                        cons, g_cons, d_cons, gap = None, (sc_tau0 - tau0) % T, d_sc, SC_GAP_TAU
                if d_cons - desired < gap:
                    new_gap = gap if g_cons >= gap else g_cons + HOLD_RELAX * (gap - g_cons)
                    adv = max(d_cons - new_gap, MIN_HELD_FRACTION * (d_cons - g_cons))
                    adv = max(0.0, min(adv, desired, d_cons - MIN_PHYS_GAP_TAU))
            else:  # limping or stopping: off the racing line, nobody is held up by it
                cons, d_cons = None, math.inf
                r = car.rate_free * car.limp_factor
                if mode == _STOPPING:
                    r *= max(0.0, 1.0 - (t0 / 1000 + dt - car.stop_start) / STOP_DECEL_S)
                adv = r * dt
            car.eff_rate = adv / dt
            new_u = tau0 + adv
            # failures
            if car.fail_kind is not None and car.rho0 + adv >= car.fail_rho:
                self._fail(car)
            if mode == _LIMP and car.rho0 + adv >= car.stop_rho:
                car.mode = _STOPPING
                car.stop_start = t0 / 1000
            elif mode == _STOPPING and adv <= 0.0:
                self._retire(car, t0 + TICK_MS, on_track=True)
                continue
            # waypoints passed during this tick
            while car.wp_tau <= new_u:
                kind, arg = self.wps[car.wp_idx][1], self.wps[car.wp_idx][2]
                frac = (car.wp_tau - tau0) / adv if adv > 0 else 1.0
                t_ms = t0 + min(TICK_MS, max(1, math.ceil(frac * TICK_MS - 1e-9)))
                if kind == _WP_LINE:
                    car.laps_done += 1
                    self.crossings.append((t_ms, order, car, False))
                    car.wp_idx = 0
                    car.wp_tau = self.wp_taus[0] + T
                    continue
                car.wp_idx += 1
                car.wp_tau = self.wp_taus[car.wp_idx] + (T if car.wp_tau >= T else 0.0)
                if kind == _WP_S1:
                    car.s1_ms = t_ms
                elif kind == _WP_S2:
                    car.s2_ms = t_ms
                elif kind == _WP_PIT:
                    if self._wants_pit(car):
                        self._enter_lane(car, t_ms, (1.0 - frac) * dt)
                        break
                elif kind == _WP_DETECT:
                    if car.mode == _RACING:
                        self._detection(car, cons, d_cons, arg)
                elif kind == _WP_ZSTART:
                    car.drs_open = car.drs_armed
                elif kind == _WP_ZEND:
                    car.drs_open = car.drs_armed = False
                    car.pass_target = None
                    car.defend = 0.0
            if car.mode == _PIT:
                continue
            if new_u >= T:
                new_u -= T
                car.wp_tau -= T
            car.tau = new_u
            car.rho = car.laps_done * T + new_u
        self.running = sorted((c for c in running if c.mode != _RETIRED), key=lambda c: -c.rho)

    def _fail(self, car: _Car) -> None:
        rng = self.rng
        kind = car.fail_kind
        car.fail_kind = None
        car.fail_rho = math.inf
        if self.flag_ms is not None or car.mode != _RACING:
            return
        car.mode = _LIMP
        car.limp_factor = rng.uniform(*LIMP_SPEED_FACTOR)
        car.pass_target = None
        car.drs_armed = car.drs_open = False
        if kind == "pits":
            car.retiring = True
            car.pit_pending = True
        elif kind == "limp":
            stop_s = rng.uniform(*LIMP_STOP_PROGRESS) * self.track.length_m
            car.stop_rho = car.laps_done * self.T + self.track.tau_of_s(stop_s)
        else:
            car.stop_rho = car.rho0 + rng.uniform(*STOP_LIMP_FRACTION) * self.T

    def _wants_pit(self, car: _Car) -> bool:
        """Decide at the pit entry whether this lap is an in-lap."""
        if car.retiring:
            return True
        if self.flag_ms is not None or car.mode != _RACING:
            return False
        lap = car.laps_done + 1
        if not car.plan or lap > self.laps - 2:
            return False
        planned_lap, compound = car.plan[0]
        go = planned_lap == lap
        cheap = self.status in (TrackStatus.SC, TrackStatus.VSC)
        if not go and cheap and lap >= FIRST_STOP_MIN_LAP and planned_lap - lap <= SC_PIT_WINDOW_LAPS:
            prob = SC_PIT_PROB if self.status == TrackStatus.SC else VSC_PIT_PROB
            go = self.rng.random() < prob
        if go:
            car.plan.pop(0)
            car.next_compound = compound
        return go

    def _enter_lane(self, car: _Car, t_ms: int, rest_s: float) -> None:
        rng = self.rng
        lane = self.track.pit
        car.mode = _PIT
        car.pit_pending = False
        car.pass_target = None
        car.defend = 0.0
        car.drs_armed = car.drs_open = False
        car.lane_entry_ms = t_ms
        car.lane_d = lane.speed_ms * rest_s
        car.lane_line_done = False
        car.serviced = False
        car.stop_until = None
        car.box_d = lane.box_d(car.entrant.team_index)
        stop = max(PIT_STOP_MIN_S, rng.gauss(PIT_STOP_MEAN_S, PIT_STOP_SD_S))
        if rng.random() < SLOW_STOP_PROB:
            stop += rng.uniform(*SLOW_STOP_EXTRA_S)
        car.stop_s = stop
        car.eff_rate = 0.0
        self._lane_tau(car)

    def _lane_tau(self, car: _Car) -> None:
        lane, track = self.track.pit, self.track
        if car.lane_line_done:
            car.tau = track.tau_of_s(car.lane_d - lane.line_d)
        else:
            car.tau = min(track.tau_of_s(lane.entry_s + car.lane_d), self.T - 1e-6)
        car.rho = car.laps_done * self.T + car.tau

    def _lane_step(self, car: _Car, t0: int, order: int) -> None:
        lane = self.track.pit
        v = lane.speed_ms
        t = t0 / 1000
        t_end = t + TICK_S
        while t < t_end - 1e-9:
            if car.stop_until is not None:
                if car.stop_until >= t_end:
                    t = t_end
                    break
                t = car.stop_until
                car.stop_until = None
                car.serviced = True
                continue
            if not car.lane_line_done:
                target = lane.line_d
            elif not car.serviced:
                target = car.box_d
            else:
                target = lane.length_m
            time_to = (target - car.lane_d) / v
            if t + time_to > t_end:
                car.lane_d += v * (t_end - t)
                t = t_end
                break
            car.lane_d = target
            t += time_to
            t_ms = min(t0 + TICK_MS, max(t0 + 1, math.ceil(t * 1000 - 1e-6)))
            if not car.lane_line_done:
                car.lane_line_done = True
                car.laps_done += 1
                self.crossings.append((t_ms, order, car, True))
            elif not car.serviced:
                if car.retiring:
                    self._retire(car, t0 + TICK_MS, on_track=False)
                    return
                team = car.entrant.team_index
                free = self.box_free.get(team, 0.0)
                start = t if free <= t else free + DOUBLE_STACK_GAP_S
                car.stop_until = start + car.stop_s
                self.box_free[team] = car.stop_until
            else:
                self._exit_lane(car, t_ms)
                return
        self._lane_tau(car)
        car.eff_rate = 0.0 if car.stop_until is not None else -1.0  # -1: pit limiter

    def _exit_lane(self, car: _Car, t_ms: int) -> None:
        car.mode = _RACING
        car.lap_pit_out = True
        car.lap_pit_lane_ms = t_ms - car.lane_entry_ms
        car.tau = self.track.pit.exit_tau
        car.rho = car.laps_done * self.T + car.tau
        car.wp_idx = bisect_right(self.wp_taus, car.tau)
        car.wp_tau = self.wp_taus[car.wp_idx]
        car.ramp_from, car.ramp_until = t_ms / 1000, t_ms / 1000 + PIT_EXIT_RAMP_S
        car.ramp_floor = min(1.0, PIT_SPEED_KPH / self.track.speed_kph_at(self.track.pit.exit_s))
        car.eff_rate = car.rate_free * car.ramp_floor

    def _detection(self, car: _Car, cons: _Car | None, gap: float, zone: int) -> None:
        """DRS detection point: arm DRS and maybe attempt a pass on the car ahead."""
        if cons is None or gap >= DRS_GAP_TAU or self.status != TrackStatus.GREEN:
            return
        drs = self.lead_laps >= self.drs_from_laps
        car.drs_armed = drs
        if car.lap_start_ms < self.restart_ms:
            return  # no overtaking before the control line after a restart
        advantage = cons.lap_target - car.lap_target
        if drs:
            advantage += DRS_BONUS_S
        if car.laps_done == 0:
            advantage += LAP1_BONUS_S
        excess = advantage - PASS_THRESHOLD_S
        if excess <= 0:
            return
        p = PASS_P_MAX * (1.0 - math.exp(-excess / PASS_SCALE_S))
        if self.rng.random() >= p:
            return
        z = self.track.drs_zones[zone]
        length = (z.end_tau - z.detect_tau) % self.T
        need = gap + FOLLOW_GAP_TAU + PASS_MARGIN_TAU
        boost = min(PASS_BOOST_RANGE[1], max(PASS_BOOST_RANGE[0], need / length))
        car.pass_target = cons
        car.pass_boost = cons.defend = boost / 2

    # ------------------------------------------------------------------ telemetry
    def _telemetry(self, t0: int) -> Iterator[Telemetry]:
        track = self.track
        xs, ys, speeds, throttles, brakes = track.tables
        s_at_tau = track.s_at_tau_table
        length = track.length_m
        gear_rpm = self.gear_rpm
        race_id = self.race_id
        pit_kph = PIT_SPEED_KPH
        top_kph = len(gear_rpm) - 1
        cars = self.running if self.started else self.grid
        for car in cars:
            mode = car.mode
            if mode == _PIT:
                s = track.pit.track_s(car.lane_d, length)
                x, y = track.pit_xy(car.lane_d)
                speed = 0.0 if car.eff_rate == 0.0 else pit_kph
                gear, rpm = gear_rpm[min(int(speed), top_kph)]
                yield _new_telemetry(
                    car.tel_prefix + str(t0), race_id, car.number, t0, car.laps_done + 1,
                    s / length, x, y, speed, rpm, gear, PIT_THROTTLE if speed else 0.0, False,
                    False, True,
                )
                continue
            f = car.tau / TAU_RES_S
            i = int(f)
            a = s_at_tau[i]
            s = a + (s_at_tau[i + 1] - a) * (f - i) if i + 1 < len(s_at_tau) else a
            if s >= length:
                s -= length
            m = int(s)
            ratio = car.eff_rate
            speed = int(speeds[m] * ratio * 10.0 + 0.5) / 10.0
            throttle = throttles[m]
            brake = brakes[m]
            if mode == _GRID:
                gear, rpm = 0, gear_rpm[0][1]
                throttle, brake = 0.0, False
            elif t0 < car.ramp_until * 1000:  # launch or pit exit: flat out
                gear, rpm = gear_rpm[min(int(speed), top_kph)]
                throttle, brake = 100.0, False
            else:
                gear, rpm = gear_rpm[min(int(speed), top_kph)]
                lift = ratio / car.rate_free
                if lift < LIFT_THRESHOLD:  # held up, or slowed by SC/VSC/a failure
                    throttle = int(throttle * lift**LIFT_THROTTLE_EXP * 10.0 + 0.5) / 10.0
            yield _new_telemetry(
                car.tel_prefix + str(t0), race_id, car.number, t0, car.laps_done + 1,
                s / length, xs[m], ys[m], speed, rpm, gear, throttle, brake, car.drs_open,
                False,
            )

    # ------------------------------------------------------------------ truth
    def log(self) -> RaceLog:
        periods = list(self.periods)
        if self.status != TrackStatus.GREEN:
            periods.append(StatusPeriod(str(self.status), self.status_since_ms, None,
                                        self.status_since_lap, None))
        return RaceLog(
            race_id=self.race_id,
            seed=self.seed,
            laps=self.laps,
            cars=[CarLog(c.number, c.code, c.grid_position, list(c.log), c.retired_ms)
                  for c in self.grid],
            status_periods=periods,
            chequered_ms=self.flag_ms,
        )


_TELEMETRY_FIELDS = (
    "event_id", "race_id", "driver_number", "ts_ms", "lap", "progress", "x", "y", "speed_kph",
    "rpm", "gear", "throttle", "brake", "drs", "in_pit",
)
if tuple(f.name for f in fields(Telemetry)) != _TELEMETRY_FIELDS:  # pragma: no cover
    raise ImportError("schemas.model.Telemetry changed: update simulator.race._new_telemetry")
(_set_event_id, _set_race_id, _set_driver_number, _set_ts_ms, _set_lap, _set_progress, _set_x,
 _set_y, _set_speed_kph, _set_rpm, _set_gear, _set_throttle, _set_brake, _set_drs,
 _set_in_pit) = (getattr(Telemetry, name).__set__ for name in _TELEMETRY_FIELDS)
_object_new = object.__new__


def _new_telemetry(
    event_id: str, race_id: str, driver_number: int, ts_ms: int, lap: int, progress: float,
    x: float, y: float, speed_kph: float, rpm: int, gear: int, throttle: float, brake: bool,
    drs: bool, in_pit: bool,
) -> Telemetry:
    """A :class:`Telemetry` equal to ``Telemetry(...)`` with the same arguments, three times faster.

    The frozen dataclass ``__init__`` pays for ``object.__setattr__`` on every field; a race has
    ~370 000 samples, so this fills the slots directly. The field list is checked at import.
    """
    t = _object_new(Telemetry)
    _set_event_id(t, event_id)
    _set_race_id(t, race_id)
    _set_driver_number(t, driver_number)
    _set_ts_ms(t, ts_ms)
    _set_lap(t, lap)
    _set_progress(t, progress)
    _set_x(t, x)
    _set_y(t, y)
    _set_speed_kph(t, speed_kph)
    _set_rpm(t, rpm)
    _set_gear(t, gear)
    _set_throttle(t, throttle)
    _set_brake(t, brake)
    _set_drs(t, drs)
    _set_in_pit(t, in_pit)
    return t


def _fmt_lap(ms: int) -> str:
    """``92345`` → ``'1:32.345'``."""
    minutes, rest = divmod(ms, 60_000)
    return f"{minutes}:{rest // 1000:02d}.{rest % 1000:03d}"
