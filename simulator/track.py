"""The simulated circuit: centre line, reference speed profile, sectors, DRS zones and pit lane.

Pure geometry and kinematics, no I/O. A :class:`Track` is built once (it is the same for every
seed) and then answers cheap table look-ups while a race runs:

* distance ``s`` along the lap (metres from the timing line) → x/y, reference speed, pedals;
* *reference time* ``tau`` (seconds of the reference lap) → distance, and back.

The simulator moves cars in reference time: a car lapping in ``T`` seconds advances ``tau`` at
``ref_lap_s / T`` per second, so it follows the reference speed profile scaled by that rate. The
profile comes from the curvature of the centre line (lateral grip that grows with speed, as
downforce does), traction-limited acceleration and braking; corners are slow, straights reach
top speed, and throttle/brake/gear/rpm follow from it.

>>> track = default_track()
>>> 5000 < track.length_m < 5600 and 80.0 < track.ref_lap_s < 100.0
True
>>> track.s_of_tau(track.tau_of_s(1234.0))  # doctest: +ELLIPSIS
1234.0...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray

from schemas.model import TrackPoint

CIRCUIT_NAME = "Racewire Park"
TRACK_LENGTH_M = 5_300
"""Lap length; the control points below are scaled to it."""

# Closed centre line through these control points (arbitrary units, driving order, starting on
# the main straight at the timing line). A centripetal Catmull-Rom spline joins them.
_CONTROL_POINTS: tuple[tuple[float, float], ...] = (
    # main straight (timing line at the first point), turn 1 hairpin
    (0.0, 0.0), (5.0, 0.0), (9.0, 0.0), (9.9, 0.1), (10.25, 0.45), (10.1, 0.85), (9.6, 0.95),
    # turns 3-4, fast esses up the east side, turn 9 onto the back straight
    (8.0, 1.2), (7.4, 1.6), (7.5, 2.3), (8.4, 3.0), (9.3, 3.5), (10.2, 4.1), (9.7, 4.9),
    (10.4, 5.7), (10.5, 6.7), (10.0, 7.2), (9.3, 7.9), (8.3, 8.1),
    # back straight, chicane, long left, hairpin
    (3.0, 8.1), (1.6, 8.1), (1.25, 7.85), (1.0, 8.1), (0.7, 8.3), (0.3, 8.1),
    (-1.2, 7.2), (-2.4, 6.9), (-2.8, 6.6), (-2.7, 6.25), (-2.3, 6.0),
    # twisty descent and the final sweeping left onto the main straight
    (-1.5, 5.3), (-1.7, 4.6), (-2.6, 4.2), (-3.0, 3.5), (-2.5, 2.9), (-3.4, 2.3),
    (-3.7, 1.3), (-3.1, 0.35), (-2.0, 0.0),
)
_SPLINE_SAMPLES_PER_SEGMENT = 400
_SPLINE_ALPHA = 0.5  # centripetal parameterisation: no cusps or self-intersections

RES_M = 1.0
"""Resolution of the per-metre tables."""
CURVATURE_WINDOW_M = 12
"""Half-width of the window over which heading changes are averaged into a curvature."""

G = 9.81
KPH_PER_MS = 3.6
V_TOP_MS = 328.0 / KPH_PER_MS
"""Asymptotic top speed; the straights here top out a little below it."""
LAT_G_LOW = 2.4
"""Lateral grip at walking pace, in g (mechanical grip)."""
LAT_G_AERO = 2.4
"""Extra lateral grip at top speed, in g (downforce grows with speed squared)."""
ACCEL_G = 1.4
"""Traction-limited acceleration from low speed, in g; falls to 0 at ``V_TOP_MS`` (drag)."""
BRAKE_G_LOW = 3.0
BRAKE_G_AERO = 2.2
"""Braking: mechanical plus aero part growing with speed squared, in g."""

TAU_RES_S = 0.01
"""Resolution of the reference-time → distance table (10 ms)."""

SECTOR_FRACTIONS = (0.31, 0.66)
"""Sector 1 and sector 2 end at these fractions of the lap distance."""

DRS_MIN_SPEED_FRACTION = 0.86
"""A DRS zone is a stretch above this fraction of the lap's top speed..."""
DRS_MIN_LENGTH_M = 350.0
"""...at least this long."""
DRS_ZONES = 2
DRS_DETECTION_BEFORE_M = 250.0
"""The detection point lies this far before the zone."""

START_LINE_M = 220.0
"""The start line lies this far after the timing line; grid slots lie between the two."""
GRID_POLE_BEHIND_START_M = 4.0
GRID_SLOT_SPACING_M = 8.0
GRID_MIN_AFTER_TIMING_LINE_M = 10.0

PIT_ENTRY_BEFORE_LINE_M = 270.0
PIT_EXIT_AFTER_LINE_M = 300.0
PIT_SPEED_KPH = 80.0
PIT_OFFSET_M = 16.0
"""Lateral offset of the pit lane from the centre line (to the inside of the lap)."""
PIT_BLEND_M = 70.0
"""Length over which the pit lane road joins or leaves the track."""
PIT_BOX_FIRST_M = 40.0
"""First team box, after the timing line along the pit lane."""
PIT_BOX_SPACING_M = 16.0
PIT_STOP_S = 2.4
"""Typical stationary time of a stop (used for the published pit loss)."""

OUTLINE_POINTS = 200

# Gear ratios expressed as the top speed of each gear (km/h), and the engine's working range.
GEAR_TOP_KPH: tuple[float, ...] = (90.0, 130.0, 165.0, 200.0, 235.0, 268.0, 300.0, 360.0)
RPM_IDLE = 4_000
RPM_SHIFT_DOWN = 9_600
RPM_SHIFT_UP = 11_900
RPM_LAUNCH = 6_500
BRAKING_G = 0.5
"""Deceleration (g) above which the profile counts as braking (brake on, throttle off)."""
AT_LIMIT_TOL_MS = 0.05
"""Within this of the grip limit (m/s) a car is mid-corner (part throttle)."""
CORNER_THROTTLE_MIN = 25.0
CORNER_THROTTLE_SPAN = 60.0
"""Mid-corner throttle (percent) = min + span x speed / top speed."""


@dataclass(frozen=True, slots=True)
class DrsZone:
    """A DRS zone in reference time: detection point, activation point, end (braking point)."""

    detect_tau: float
    start_tau: float
    end_tau: float


@dataclass(frozen=True, slots=True)
class PitLane:
    """The pit lane runs beside the main straight, from entry (before the line) to exit."""

    entry_s: float
    exit_s: float
    length_m: float
    line_d: float
    """Distance along the lane at which it crosses the timing line."""
    speed_ms: float
    entry_tau: float
    exit_tau: float

    def box_d(self, team_index: int) -> float:
        """Distance along the lane of a team's box (after the timing line)."""
        return self.line_d + PIT_BOX_FIRST_M + PIT_BOX_SPACING_M * team_index

    def track_s(self, d: float, track_length: float) -> float:
        """Track distance beside lane distance ``d``."""
        return (self.entry_s + d) % track_length


class Track:
    """Geometry and reference profile of the circuit, with fast look-ups."""

    def __init__(self, control_points: tuple[tuple[float, float], ...], length_m: int) -> None:
        self.name = CIRCUIT_NAME
        self.length_m = length_m
        xs, ys = _resample(_catmull_rom(np.asarray(control_points, dtype=float)), length_m)
        self._xs, self._ys = xs, ys
        n = len(xs)
        heading = np.unwrap(np.arctan2(np.roll(ys, -1) - ys, np.roll(xs, -1) - xs))
        w = CURVATURE_WINDOW_M
        # a closed lap turns through a whole number of turns (one, for a circuit)
        total_turn = 2 * math.pi * round(float(heading[-1] - heading[0]) / (2 * math.pi))
        ext = np.concatenate([heading[-w:] - total_turn, heading, heading[:w] + total_turn])
        curvature = (ext[2 * w :] - ext[: -2 * w]) / (2 * w * RES_M)
        v_lim = _corner_speed(np.abs(curvature))
        v = _speed_profile(v_lim)
        # reference time at the start of each metre, and the lap
        tau = np.concatenate([[0.0], np.cumsum(RES_M / v)])
        self.ref_lap_s = float(tau[-1])
        taus = np.arange(0.0, self.ref_lap_s + TAU_RES_S, TAU_RES_S)
        self._s_at_tau: list[float] = np.interp(taus, tau, np.arange(n + 1) * RES_M).tolist()
        self._tau_list: list[float] = tau.tolist()
        # per-metre pedal state from the shape of the profile
        accel = (np.roll(v, -1) ** 2 - v**2) / (2 * RES_M)
        braking = accel < -G * BRAKING_G
        at_limit = (v >= v_lim - AT_LIMIT_TOL_MS) & (v_lim < v.max() - AT_LIMIT_TOL_MS)
        throttle = np.where(
            braking, 0.0,
            np.where(at_limit & ~braking,
                     CORNER_THROTTLE_MIN + CORNER_THROTTLE_SPAN * v / V_TOP_MS, 100.0),
        )
        self.max_speed_kph = float(v.max() * KPH_PER_MS)
        self._speed_kph: list[float] = (v * KPH_PER_MS).tolist()
        self._throttle: list[float] = np.round(throttle, 1).tolist()
        self._brake: list[bool] = braking.tolist()
        self._x: list[float] = np.round(xs, 2).tolist()
        self._y: list[float] = np.round(ys, 2).tolist()
        self._n = n
        # sectors, DRS, pit lane, grid
        self.sector_taus = tuple(self.tau_of_s(f * length_m) for f in SECTOR_FRACTIONS)
        self.drs_zones = self._find_drs_zones(v)
        self.pit = self._make_pit_lane()
        self._pit_xy = self._pit_lane_xy()

    # ------------------------------------------------------------------ look-ups
    def s_of_tau(self, tau: float) -> float:
        """Distance (m) at reference time ``tau`` (s) into the lap."""
        f = tau / TAU_RES_S
        i = int(f)
        table = self._s_at_tau
        if i >= len(table) - 1:
            return table[-1] % self.length_m
        a = table[i]
        return a + (table[i + 1] - a) * (f - i)

    def tau_of_s(self, s: float) -> float:
        """Reference time (s) at distance ``s`` (m) into the lap."""
        s %= self.length_m
        i = int(s / RES_M)
        tl = self._tau_list
        a = tl[i]
        return a + (tl[i + 1] - a) * (s / RES_M - i)

    def index(self, s: float) -> int:
        """Index of the per-metre tables for distance ``s``."""
        i = int(s / RES_M)
        return i if i < self._n else i % self._n

    def speed_kph_at(self, s: float) -> float:
        """Reference speed at distance ``s``."""
        return self._speed_kph[self.index(s % self.length_m)]

    def xy(self, i: int) -> tuple[float, float]:
        return self._x[i], self._y[i]

    @property
    def tables(self) -> tuple[list[float], list[float], list[float], list[float], list[bool]]:
        """Per-metre x, y, reference speed (km/h), throttle (%), brake: for hot loops."""
        return self._x, self._y, self._speed_kph, self._throttle, self._brake

    @property
    def s_at_tau_table(self) -> list[float]:
        """Distance at every ``TAU_RES_S`` of reference time (interpolate between entries)."""
        return self._s_at_tau

    def pit_xy(self, d: float) -> tuple[float, float]:
        """x/y of lane distance ``d`` (offset from the centre line, blended in and out)."""
        i = min(max(int(d / RES_M), 0), len(self._pit_xy) - 1)
        return self._pit_xy[i]

    # ------------------------------------------------------------------ derived
    def outline(self, points: int = OUTLINE_POINTS) -> list[TrackPoint]:
        """``points`` points of the centre line, evenly spaced, from the timing line."""
        step = self._n / points
        return [TrackPoint(self._x[int(k * step)], self._y[int(k * step)]) for k in range(points)]

    def grid_slot_s(self, slot: int) -> float:
        """Distance from the timing line of grid slot ``slot`` (0 = pole)."""
        s = START_LINE_M - GRID_POLE_BEHIND_START_M - GRID_SLOT_SPACING_M * slot
        if s < GRID_MIN_AFTER_TIMING_LINE_M:
            raise ValueError(
                f"grid slot {slot + 1} would lie behind the timing line; "
                f"at most {max_grid_size()} cars fit on this grid"
            )
        return s

    def pit_loss_s(self) -> float:
        """Typical time lost by a stop: lane time minus racing time over the same stretch."""
        racing = (self.pit.exit_tau - self.pit.entry_tau) % self.ref_lap_s
        return self.pit.length_m / self.pit.speed_ms + PIT_STOP_S - racing

    def _find_drs_zones(self, v: NDArray[np.float64]) -> tuple[DrsZone, ...]:
        fast = v >= DRS_MIN_SPEED_FRACTION * v.max()
        n = len(v)
        # rotate so that index 0 is slow: runs then never wrap
        start = int(np.argmin(fast))
        runs: list[tuple[int, int]] = []
        run_start: int | None = None
        for k in range(n + 1):
            i = (start + k) % n
            if k < n and fast[i]:
                if run_start is None:
                    run_start = start + k
            elif run_start is not None:
                runs.append((run_start, start + k))
                run_start = None
        runs = [r for r in runs if (r[1] - r[0]) * RES_M >= DRS_MIN_LENGTH_M]
        runs.sort(key=lambda r: r[0] - r[1])  # longest first
        zones = [
            DrsZone(
                detect_tau=self.tau_of_s((a * RES_M - DRS_DETECTION_BEFORE_M) % self.length_m),
                start_tau=self.tau_of_s((a * RES_M) % self.length_m),
                end_tau=self.tau_of_s((b * RES_M) % self.length_m),
            )
            for a, b in runs[:DRS_ZONES]
        ]
        return tuple(sorted(zones, key=lambda z: z.detect_tau))

    def _make_pit_lane(self) -> PitLane:
        entry_s = self.length_m - PIT_ENTRY_BEFORE_LINE_M
        exit_s = PIT_EXIT_AFTER_LINE_M
        return PitLane(
            entry_s=entry_s,
            exit_s=exit_s,
            length_m=PIT_ENTRY_BEFORE_LINE_M + PIT_EXIT_AFTER_LINE_M,
            line_d=PIT_ENTRY_BEFORE_LINE_M,
            speed_ms=PIT_SPEED_KPH / KPH_PER_MS,
            entry_tau=self.tau_of_s(entry_s),
            exit_tau=self.tau_of_s(exit_s),
        )

    def _pit_lane_xy(self) -> list[tuple[float, float]]:
        lane = self.pit
        out: list[tuple[float, float]] = []
        n = self._n
        for k in range(int(lane.length_m / RES_M) + 1):
            d = k * RES_M
            i = int(lane.track_s(d, self.length_m) / RES_M) % n
            j = (i + 1) % n
            dx, dy = self._xs[j] - self._xs[i], self._ys[j] - self._ys[i]
            norm = math.hypot(dx, dy) or 1.0
            blend = min(1.0, d / PIT_BLEND_M, (lane.length_m - d) / PIT_BLEND_M)
            off = PIT_OFFSET_M * _smoothstep(blend)
            # left of the driving direction is the inside of this anticlockwise lap
            out.append((round(float(self._xs[i] - dy / norm * off), 2),
                        round(float(self._ys[i] + dx / norm * off), 2)))
        return out


def max_grid_size() -> int:
    """How many grid slots fit between the timing line and the start line."""
    usable = START_LINE_M - GRID_POLE_BEHIND_START_M - GRID_MIN_AFTER_TIMING_LINE_M
    return int(usable // GRID_SLOT_SPACING_M) + 1


@cache
def default_track() -> Track:
    """The circuit every simulated race runs on (built once per process)."""
    return Track(_CONTROL_POINTS, TRACK_LENGTH_M)


@cache
def gear_rpm_table() -> tuple[tuple[int, int], ...]:
    """(gear, rpm) for every whole km/h from 0 to the top of the last gear."""
    out: list[tuple[int, int]] = []
    for kph in range(int(GEAR_TOP_KPH[-1]) + 1):
        gear = next(g for g, top in enumerate(GEAR_TOP_KPH, start=1) if kph <= top)
        if kph == 0:
            out.append((0, RPM_IDLE))
            continue
        low = 0.0 if gear == 1 else GEAR_TOP_KPH[gear - 2]
        top = GEAR_TOP_KPH[gear - 1]
        floor = RPM_LAUNCH if gear == 1 else RPM_SHIFT_DOWN
        out.append((gear, int(floor + (RPM_SHIFT_UP - floor) * (kph - low) / (top - low))))
    return tuple(out)


# ---------------------------------------------------------------------- geometry helpers


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def _catmull_rom(points: NDArray[np.float64]) -> NDArray[np.float64]:
    """Closed centripetal Catmull-Rom spline through ``points``."""
    n = len(points)
    out = []
    for i in range(n):
        p0, p1, p2, p3 = points[(i - 1) % n], points[i], points[(i + 1) % n], points[(i + 2) % n]
        t0 = 0.0
        t1 = t0 + float(np.linalg.norm(p1 - p0)) ** _SPLINE_ALPHA
        t2 = t1 + float(np.linalg.norm(p2 - p1)) ** _SPLINE_ALPHA
        t3 = t2 + float(np.linalg.norm(p3 - p2)) ** _SPLINE_ALPHA
        t = np.linspace(t1, t2, _SPLINE_SAMPLES_PER_SEGMENT, endpoint=False)[:, None]
        a1 = (t1 - t) / (t1 - t0) * p0 + (t - t0) / (t1 - t0) * p1
        a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
        a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
        b1 = (t2 - t) / (t2 - t0) * a1 + (t - t0) / (t2 - t0) * a2
        b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
        out.append((t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2)
    return np.vstack(out)


def _resample(curve: NDArray[np.float64], length_m: int) -> tuple[NDArray[np.float64], ...]:
    """Scale a closed curve to ``length_m`` and resample it every ``RES_M`` metres."""
    closed = np.vstack([curve, curve[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    scale = length_m / cum[-1]
    s = np.arange(0.0, length_m, RES_M)
    xs = np.interp(s, cum * scale, closed[:, 0] * scale)
    ys = np.interp(s, cum * scale, closed[:, 1] * scale)
    return xs - xs[0], ys - ys[0]


def _corner_speed(curvature: NDArray[np.float64]) -> NDArray[np.float64]:
    """Highest speed at which the lateral grip holds a curvature (aero grip grows with v^2)."""
    aero = G * LAT_G_AERO / V_TOP_MS**2
    denom = curvature - aero
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.sqrt(G * LAT_G_LOW / denom)
    return np.where(denom > 0, np.minimum(v, V_TOP_MS), V_TOP_MS)


def _speed_profile(v_lim: NDArray[np.float64]) -> NDArray[np.float64]:
    """Forward (traction) and backward (braking) passes around the closed lap."""
    n = len(v_lim)
    lim = v_lim.tolist()
    fwd = [0.0] * n
    v = min(lim)
    for k in range(2 * n):  # two laps so that the wrap-around settles
        i = k % n
        a = G * ACCEL_G * max(0.0, 1.0 - (v / V_TOP_MS) ** 2)
        v = min(lim[i], math.sqrt(v * v + 2.0 * a * RES_M))
        fwd[i] = v
    out = fwd[:]
    v = min(lim)
    for k in range(2 * n):
        i = (-1 - k) % n
        b = G * (BRAKE_G_LOW + BRAKE_G_AERO * (v / V_TOP_MS) ** 2)
        v = min(fwd[i], math.sqrt(v * v + 2.0 * b * RES_M))
        out[i] = v
    return np.asarray(out)
