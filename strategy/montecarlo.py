"""Monte Carlo race simulator: the rest of a race, lap by lap, many times, in Numba.

Pure numbers in, numbers out: :class:`FieldState` (the race at the timing line), :class:`RaceModel`
(how laps evolve), optional per-car pit plans; no model objects and no I/O.

Units: seconds (float64) for every time, laps (int) for every lap number and tyre age. Lap numbers
are the race's (1-based): an in-lap ``L`` means the car boxes at the end of lap ``L`` and drives
lap ``L + 1`` (its out-lap) on the new set at tyre age 0.

Model of one lap for one car (``k`` = laps driven since the snapshot, 0 for the next lap)::

    lap = base + offset[c] + lin[c]·age + quad[c]·age² - fuel·k + noise·z
    base = pace_s - (offset[c0] + lin[c0]·age0 + quad[c0]·age0²)   (so the next lap is pace_s)

times ``sc_lap_factor`` / ``vsc_lap_factor`` under safety car / VSC, plus the pit loss on an in-lap
(times ``pit_loss_sc_factor`` / ``pit_loss_vsc_factor`` under SC / VSC; the loss is booked on the
in-lap's crossing). ``z`` is a standard normal approximated by the sum of four uniforms (bounded at
±3.5 sd). Interactions, processed in the running order at the start of each lap:

- a car whose free crossing time is within ``follow_gap_s`` of the car ahead's new crossing time is
  held there, unless its free lap is more than ``pass_delta_s`` faster than that car's, in which
  case it passes with probability ``pass_prob``; a car on its in-lap is neither held up nor holds
  anybody up (the pit lane);
- under SC nobody passes and each interval to the car ahead shrinks towards ``follow_gap_s``
  (the part above it is multiplied by ``sc_compress`` every SC lap); lapped cars keep their laps;
  under VSC nobody passes and intervals are kept;
- SC / VSC are deployed at the start of lap ``l`` with ``sc_prob[l-1]`` / ``vsc_prob[l-1]`` while
  neither is out, for ``1 + floor(Exp(mean - 0.5))`` laps (mean ≈ ``sc_laps`` / ``vsc_laps``);
- each running car retires with ``retirement_prob`` per lap; retired cars rank behind the
  runners, later retirements ahead of earlier ones (cars inactive at the start stay last, in order).

Race time is the time, from the leader's crossing at the snapshot, at which a car completes the
full distance; a lapped car's time is extrapolated to the full distance (the ranking is the same).

Random numbers: one splitmix64 stream per simulation (seeded from ``seed`` and the simulation
index) and, in the per-car re-simulations of :mod:`strategy.calls`, one per (simulation, car).
Every lap draws the same numbers in car-index order whatever the plans, so two runs with the same
seed and different plans use common random numbers, and results do not depend on thread count.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numba
import numpy as np
from numba import prange

from strategy.fuel import fuel_s_per_lap

COMPOUNDS: tuple[str, ...] = ("SOFT", "MEDIUM", "HARD", "INTERMEDIATE", "WET")  # index 0..4; first three dry
DRY = 3
MAX_STOPS = 3

F = TypeVar("F", bound=Callable[..., Any])

# fastmath without nnan/ninf: the kernels never produce NaN/inf, but the flags would let LLVM
# assume so and break comparisons against the large sentinel keys.
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def _jit(**options: Any) -> Callable[[F], F]:
    """``numba.njit`` with on-disk caching, silently without it where no cache directory is writable."""

    def decorate(fn: F) -> F:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", numba.NumbaWarning)
                return numba.njit(cache=True, **options)(fn)  # type: ignore[no-any-return]
        except (RuntimeError, OSError):  # no locator: package and user cache dir read-only
            return numba.njit(cache=False, **options)(fn)  # type: ignore[no-any-return]

    return decorate


# ----------------------------------------------------------------------------------- inputs


#: the per-car arrays of :class:`FieldState`
_PER_CAR = ("numbers", "gap_s", "compound", "tyre_age", "pace_s", "used_dry", "stops", "active")


@dataclass(slots=True)
class FieldState:
    """The race at the timing line after the leader completed ``lap`` laps; arrays in running order.

    ``gap_s`` is the time behind the leader (a lapped car's includes the lap(s)); ``pace_s`` is the
    expected green lap time of the car's next lap on its current tyres, fuel and wear included.
    ``codes`` (optional, e.g. ``"NOR"``) only make explanations nicer.
    """

    lap: int
    total_laps: int
    numbers: np.ndarray  # int32 car numbers
    gap_s: np.ndarray  # float64 s behind the leader
    compound: np.ndarray  # int8 index into COMPOUNDS
    tyre_age: np.ndarray  # int32 laps already done on this set
    pace_s: np.ndarray  # float64 s, expected green lap time of the next lap
    used_dry: np.ndarray  # int8 bitmask of dry compounds used so far (bit i = COMPOUNDS[i])
    stops: np.ndarray  # int32 stops made so far
    active: np.ndarray  # bool, still running
    codes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.numbers = np.ascontiguousarray(self.numbers, dtype=np.int32)
        n = self.numbers.shape[0]
        self.gap_s = np.ascontiguousarray(self.gap_s, dtype=np.float64)
        self.compound = np.ascontiguousarray(self.compound, dtype=np.int8)
        self.tyre_age = np.ascontiguousarray(self.tyre_age, dtype=np.int32)
        self.pace_s = np.ascontiguousarray(self.pace_s, dtype=np.float64)
        self.used_dry = np.ascontiguousarray(self.used_dry, dtype=np.int8)
        self.stops = np.ascontiguousarray(self.stops, dtype=np.int32)
        self.active = np.ascontiguousarray(self.active, dtype=np.bool_)
        for name in _PER_CAR[1:]:
            if getattr(self, name).shape != (n,):
                raise ValueError(f"FieldState.{name} has shape {getattr(self, name).shape}, expected ({n},)")
        if not 0 <= self.lap < self.total_laps:
            raise ValueError(f"FieldState.lap={self.lap} must be in [0, total_laps={self.total_laps})")
        if n and (self.compound.min() < 0 or self.compound.max() >= len(COMPOUNDS)):
            raise ValueError(f"FieldState.compound must index COMPOUNDS {COMPOUNDS}")
        if n and self.tyre_age.min() < 0:
            raise ValueError("FieldState.tyre_age must be >= 0")
        if self.active.any() and not np.all(np.isfinite(self.pace_s[self.active])):
            raise ValueError("FieldState.pace_s must be finite for active cars")
        if self.codes and len(self.codes) != n:
            raise ValueError(f"FieldState.codes has {len(self.codes)} entries, expected {n}")

    @property
    def n(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def laps_left(self) -> int:
        return self.total_laps - self.lap

    def reorder(self, order: np.ndarray) -> None:
        """Put the cars in ``order`` (indices into the current order), in place."""
        for name in _PER_CAR:
            setattr(self, name, np.ascontiguousarray(getattr(self, name)[order]))
        if self.codes:
            self.codes = tuple(self.codes[j] for j in order)

    def index_of(self, number: int) -> int:
        """Index (running order) of car ``number``; ValueError if it is not in the field."""
        hits = np.flatnonzero(self.numbers == number)
        if hits.size == 0:
            raise ValueError(f"car {number} is not in the field {self.numbers.tolist()}")
        return int(hits[0])

    def name(self, i: int) -> str:
        """Code of car ``i`` when known, else ``#<number>``."""
        return self.codes[i] if self.codes else f"#{int(self.numbers[i])}"


@dataclass(slots=True, kw_only=True)
class RaceModel:
    """How laps evolve (seconds, laps). Per-compound arrays are indexed like :data:`COMPOUNDS`;
    ``sc_prob`` / ``vsc_prob`` by lap - 1 and must cover ``total_laps``."""

    compound_offset_s: np.ndarray  # float64[5], pace vs MEDIUM at equal age/fuel
    deg_linear_s: np.ndarray  # float64[5], lap-time increase per lap of tyre age
    deg_quadratic_s: np.ndarray  # float64[5], per lap² (late-stint cliff)
    sc_prob: np.ndarray  # float64[total_laps], P(SC deployed during lap l), index l-1
    vsc_prob: np.ndarray  # float64[total_laps]
    fuel_s_per_lap: float  # each lap gets this much faster as fuel burns: strategy.fuel.fuel_s_per_lap
    pit_loss_s: float = 22.0
    pit_loss_sc_factor: float = 0.5
    pit_loss_vsc_factor: float = 0.7
    sc_laps: float = 4.0  # mean durations (laps)
    vsc_laps: float = 2.0
    sc_lap_factor: float = 1.35
    vsc_lap_factor: float = 1.25
    lap_noise_s: float = 0.4  # standard deviation of a green lap
    retirement_prob: float = 0.001  # per car per lap
    pass_delta_s: float = 0.8  # pace advantage needed to be able to pass the car ahead
    pass_prob: float = 0.5  # chance per lap of completing a pass when able
    follow_gap_s: float = 0.5  # a car held up runs this far behind
    two_compound_rule: bool = True  # dry race: at least two different dry compounds
    sc_compress: float = 0.35  # share of an interval above follow_gap_s kept after each SC lap
    stint_loss_limit_s: float = 3.0  # sensible max stint: wear may cost at most this much per lap
    max_stint_laps: np.ndarray | None = field(default=None)  # int[5]; None: from stint_loss_limit_s

    def __post_init__(self) -> None:
        for name in ("compound_offset_s", "deg_linear_s", "deg_quadratic_s"):
            arr = np.ascontiguousarray(getattr(self, name), dtype=np.float64)
            if arr.shape != (len(COMPOUNDS),):
                raise ValueError(f"RaceModel.{name} must have {len(COMPOUNDS)} entries (one per compound)")
            setattr(self, name, arr)
        self.sc_prob = np.ascontiguousarray(self.sc_prob, dtype=np.float64)
        self.vsc_prob = np.ascontiguousarray(self.vsc_prob, dtype=np.float64)
        for name in ("sc_prob", "vsc_prob"):
            arr = getattr(self, name)
            if arr.ndim != 1 or (arr.size and (arr.min() < 0 or arr.max() > 1)):
                raise ValueError(f"RaceModel.{name} must be a 1-d array of probabilities")
        if self.max_stint_laps is not None:
            self.max_stint_laps = np.ascontiguousarray(self.max_stint_laps, dtype=np.int64)

    def tyre_s(self, compound: Any, age: Any) -> Any:
        """Lap time from the tyres (s) on ``compound`` at ``age`` laps: pace offset plus wear
        (scalars or arrays)."""
        off, lin, quad = self.compound_offset_s, self.deg_linear_s, self.deg_quadratic_s
        return off[compound] + lin[compound] * age + quad[compound] * np.square(age)

    @classmethod
    def typical(cls, total_laps: int, *, deg_scale: float = 1.0, sc_per_race: float = 0.5,
                vsc_per_race: float = 0.3, **overrides: Any) -> RaceModel:
        """A plausible dry-race model (soft fast but short-lived, hard slow but durable).

        ``deg_scale`` multiplies the degradation; ``sc_per_race`` / ``vsc_per_race`` are the
        expected deployments, spread evenly over the laps (lap 1 three times as likely).
        """
        p = np.full(total_laps, 1.0 / (total_laps + 2))
        p[0] *= 3.0
        kw: dict[str, Any] = {
            "compound_offset_s": np.array([-0.5, 0.0, 0.4, 3.0, 5.0]),
            "deg_linear_s": np.array([0.10, 0.06, 0.035, 0.06, 0.05]) * deg_scale,
            "deg_quadratic_s": np.array([0.0030, 0.0010, 0.0004, 0.0010, 0.0008]) * deg_scale,
            "sc_prob": np.clip(p * sc_per_race, 0.0, 1.0),
            "vsc_prob": np.clip(p * vsc_per_race, 0.0, 1.0),
            "fuel_s_per_lap": fuel_s_per_lap(total_laps),
        }
        kw.update(overrides)
        return cls(**kw)

    def stint_limits(self, total_laps: int) -> np.ndarray:
        """Longest sensible stint (laps on one new set) per compound, int64[5]."""
        if self.max_stint_laps is not None:
            return np.asarray(self.max_stint_laps, dtype=np.int64)
        ages = np.arange(total_laps + 1, dtype=np.float64)
        wear = self.deg_linear_s[:, None] * ages[None, :] + self.deg_quadratic_s[:, None] * ages[None, :] ** 2
        ok = wear <= self.stint_loss_limit_s
        # first age where wear exceeds the limit (or total_laps)
        limit = np.where(ok.all(axis=1), total_laps, np.argmin(ok, axis=1) - 1)
        return np.maximum(limit, 1).astype(np.int64)

    def check(self, field_state: FieldState) -> None:
        if self.sc_prob.shape[0] < field_state.total_laps or self.vsc_prob.shape[0] < field_state.total_laps:
            raise ValueError(
                f"RaceModel.sc_prob/vsc_prob have {self.sc_prob.shape[0]}/{self.vsc_prob.shape[0]} laps; "
                f"the race has {field_state.total_laps}: give one probability per lap")


@dataclass(frozen=True, slots=True)
class Strategy:
    """The stops a car will still make: ``((in-lap, compound fitted), ...)`` in lap order."""

    stops: tuple[tuple[int, str], ...]

    def __post_init__(self) -> None:
        last = -1
        for stop in self.stops:
            if len(stop) != 2:
                raise ValueError(f"a stop is (in-lap, compound), got {stop!r}")
            lap, compound = stop
            if compound not in COMPOUNDS:
                raise ValueError(f"unknown compound {compound!r}: expected one of {COMPOUNDS}")
            if int(lap) <= last:
                raise ValueError(f"in-laps must increase: {self.stops!r}")
            last = int(lap)
        if len(self.stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} more stops, got {len(self.stops)}")

    @property
    def label(self) -> str:
        if not self.stops:
            return "no stop"
        return ", ".join(f"box L{lap} → {compound}" for lap, compound in self.stops)

    def validate(self, field_state: FieldState) -> None:
        """ValueError unless every in-lap is in (field.lap, total_laps)."""
        for lap, _ in self.stops:
            if not field_state.lap < lap < field_state.total_laps:
                raise ValueError(f"{self.label}: in-lap {lap} must be after lap {field_state.lap} "
                                 f"and before the last lap {field_state.total_laps}")

    def __str__(self) -> str:
        return self.label


@dataclass(slots=True)
class Plans:
    """Pit plans of every car: in-lap (-1 = none) and compound index, ``int64[n, MAX_STOPS]``."""

    pit_lap: np.ndarray
    pit_compound: np.ndarray

    @classmethod
    def none(cls, n: int) -> Plans:
        return cls(np.full((n, MAX_STOPS), -1, np.int64), np.full((n, MAX_STOPS), -1, np.int64))

    def copy(self) -> Plans:
        return Plans(self.pit_lap.copy(), self.pit_compound.copy())

    def set(self, car: int, strategy: Strategy) -> None:
        """Replace car ``car``'s (index) plan by ``strategy``."""
        self.pit_lap[car] = -1
        self.pit_compound[car] = -1
        for j, (lap, compound) in enumerate(strategy.stops):
            self.pit_lap[car, j] = lap
            self.pit_compound[car, j] = COMPOUNDS.index(compound)

    def strategy(self, car: int) -> Strategy:
        return Strategy(tuple((int(lap), COMPOUNDS[int(c)])
                              for lap, c in zip(self.pit_lap[car], self.pit_compound[car], strict=True) if lap >= 0))


# ----------------------------------------------------------------------------------- output


@dataclass(slots=True)
class SimResult:
    """``n_sims`` outcomes for the cars of the field (columns in the field's running order)."""

    numbers: np.ndarray  # int32[n]
    positions: np.ndarray  # int16[n_sims, n], 1-based finishing positions (retired cars last)
    race_time_s: np.ndarray  # float64[n_sims, n], from the snapshot to the full distance; NaN if retired
    retired: np.ndarray  # bool[n_sims, n], retired before the end (or inactive at the snapshot)

    @property
    def n_sims(self) -> int:
        return int(self.positions.shape[0])

    def position_distribution(self) -> np.ndarray:
        """float64[n, n]: row = car, column p-1 = P(finishing p-th). Rows sum to 1."""
        n = self.positions.shape[1]
        out = np.zeros((n, n))
        for i in range(n):
            out[i] = np.bincount(self.positions[:, i].astype(np.int64) - 1, minlength=n)[:n]
        return out / max(self.n_sims, 1)

    def expected_position(self) -> np.ndarray:
        """float64[n], mean finishing position per car."""
        return np.asarray(self.positions.mean(axis=0, dtype=np.float64))

    def time_quantiles(self, q: Sequence[float] = (0.1, 0.5, 0.9)) -> np.ndarray:
        """float64[len(q), n], race-time quantiles over the simulations the car finished (NaN if none)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(np.nanquantile(self.race_time_s, list(q), axis=0))

    def mean_time(self) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(np.nanmean(self.race_time_s, axis=0))


# ----------------------------------------------------------------------------------- kernels

_GOLD = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK16 = np.uint64(0xFFFF)
_MASK32 = np.uint64(0xFFFFFFFF)
_SQRT3 = math.sqrt(3.0)
_BIG = 1e12  # sort keys at/above this are retired cars
_RETIRED_AT_START = 1e15

# indices into the scalar parameter vector
P_FUEL, P_PIT, P_SC_PF, P_VSC_PF, P_SC_MEAN, P_VSC_MEAN, P_SC_LF, P_VSC_LF = range(8)
P_NOISE, P_RET, P_PASS_DELTA, P_PASS_PROB, P_FOLLOW, P_COMPRESS, P_LAP_REF = range(8, 15)
N_PARAMS = 15

GREEN, SC, VSC = 0, 1, 2


@_jit(inline="always")
def _mix(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@_jit(inline="always")
def _normal(r: np.uint64) -> float:
    """Approximately standard normal from 64 random bits (sum of four 16-bit uniforms)."""
    a = (np.int64(r & _MASK16) + np.int64((r >> np.uint64(16)) & _MASK16)
         + np.int64((r >> np.uint64(32)) & _MASK16) + np.int64(r >> np.uint64(48)))
    return ((float(a) + 2.0) * (1.0 / 65536.0) - 2.0) * _SQRT3


@_jit(inline="always")
def _u_hi(r: np.uint64) -> float:
    return (float(np.int64(r >> np.uint64(32))) + 0.5) * (1.0 / 4294967296.0)


@_jit(inline="always")
def _u_lo(r: np.uint64) -> float:
    return (float(np.int64(r & _MASK32)) + 0.5) * (1.0 / 4294967296.0)


@_jit(inline="always")
def _sim_key(seed: np.uint64, sim: int) -> np.uint64:
    return _mix(seed * _GOLD + np.uint64(sim) + np.uint64(1))


@_jit(inline="always")
def _draw(sim_key: np.uint64, k: int, car: int, slot: int) -> np.uint64:
    """Counter-based random bits for (simulation, lap k (-1: start), car (-1: race), slot)."""
    return _mix(sim_key + np.uint64(((k + 1) * 1024 + car + 1) * 4 + slot) * _GOLD)


@_jit(inline="always")
def _retire_lap(sim_key: np.uint64, car: int, p: float, R: int) -> int:
    """0-based lap (from the snapshot) on which the car retires, R if it does not (geometric)."""
    if p <= 0.0:
        return R
    if p >= 1.0:
        return 0
    u = _u_hi(_draw(sim_key, -1, car, 0))
    k = math.floor(math.log(u) / math.log1p(-p))
    return int(min(k, R))


@_jit(inline="always")
def _duration(mean: float, u: float) -> int:
    m = mean - 0.5
    if m < 0.01:
        m = 0.01
    return 1 + int(-m * math.log(u))


@_jit(fastmath=_FASTMATH, nogil=True)
def _one_sim(s, seed, lap0, R, gap0, comp0, age0, base, active0, pit_lap, pit_comp,
             off, lin, quad, sc_prob, vsc_prob, P,
             T, key, skey, comp, age, nxt, alive, order, rlap,
             pos_out, time_out, ret_out,
             record, rec_T, rec_sorted, rec_order, rec_status, rec_next):
    """One simulation of laps lap0+1 .. lap0+R; writes row ``s`` of the outputs (and the records)."""
    n = gap0.shape[0]
    fuel = P[P_FUEL]
    noise = P[P_NOISE]
    ret_p = P[P_RET]
    follow = P[P_FOLLOW]
    pass_delta = P[P_PASS_DELTA]
    pass_prob = P[P_PASS_PROB]
    compress = P[P_COMPRESS]
    lap_ref = P[P_LAP_REF]
    sk = _sim_key(seed, s)
    for i in range(n):
        rlap[i] = _retire_lap(sk, i, ret_p, R)
        T[i] = gap0[i]
        comp[i] = comp0[i]
        age[i] = age0[i]
        nxt[i] = 0
        alive[i] = active0[i]
        key[i] = gap0[i] if active0[i] else _RETIRED_AT_START + i
        order[i] = i
    for q in range(1, n):  # insertion sort by key
        v = order[q]
        b = q - 1
        while b >= 0 and key[order[b]] > key[v]:
            order[b + 1] = order[b]
            b -= 1
        order[b + 1] = v
    for p in range(n):
        skey[p] = key[order[p]]
    if record:
        rec_status[s, 0] = GREEN
        for p in range(n):
            rec_order[s, 0, p] = order[p]
            rec_sorted[s, 0, p] = skey[p]
        for i in range(n):
            rec_T[s, 0, i] = key[i]
    sc_left = 0
    vsc_left = 0
    for k in range(R):
        lap = lap0 + k + 1
        r = _draw(sk, k, -1, 0)
        r2 = _draw(sk, k, -1, 1)
        if sc_left == 0 and vsc_left == 0:
            if _u_hi(r) < sc_prob[k]:
                sc_left = _duration(P[P_SC_MEAN], _u_hi(r2))
            elif _u_lo(r) < vsc_prob[k]:
                vsc_left = _duration(P[P_VSC_MEAN], _u_lo(r2))
        status = GREEN
        lf = 1.0
        pf = 1.0
        if sc_left > 0:
            status = SC
            lf = P[P_SC_LF]
            pf = P[P_SC_PF]
        elif vsc_left > 0:
            status = VSC
            lf = P[P_VSC_LF]
            pf = P[P_VSC_PF]
        pit_cost = P[P_PIT] * pf
        last_T = 0.0
        last_lt = 0.0
        have = False
        fuel_k = fuel * k
        for p in range(n):
            i = order[p]
            if record:
                rec_next[s, k, p] = -1e18  # not on track for the whole lap (unless set below)
            if not alive[i]:
                continue
            c = comp[i]
            a = age[i]
            lt = (base[i] + off[c] + (lin[c] + quad[c] * a) * a - fuel_k + noise * _normal(_draw(sk, k, i, 0))) * lf
            tf = T[i] + lt
            pitting = nxt[i] < pit_lap.shape[1] and pit_lap[i, nxt[i]] == lap
            if k == rlap[i]:
                alive[i] = False
                key[i] = _BIG + (R - k) * 1e6 + T[i]
                skey[p] = key[i]
                continue
            if pitting:
                T[i] = tf + pit_cost
                key[i] = T[i]
                skey[p] = T[i]
                comp[i] = pit_comp[i, nxt[i]]
                age[i] = 0
                nxt[i] += 1
                continue
            if have:
                if status == SC:
                    gap = tf - last_T
                    if gap < follow:
                        tf = last_T + follow
                    elif gap < lap_ref:
                        tf = last_T + follow + (gap - follow) * compress
                elif tf < last_T + follow:
                    can_pass = status == GREEN and last_lt - lt > pass_delta
                    if not (can_pass and _u_hi(_draw(sk, k, i, 1)) < pass_prob):
                        tf = last_T + follow
            T[i] = tf
            key[i] = tf
            skey[p] = tf
            if record:
                rec_next[s, k, p] = tf
            age[i] = a + 1
            if not have or tf > last_T:
                last_T = tf
                last_lt = lt
                have = True
        for q in range(1, n):  # insertion sort: the order is nearly sorted
            kv = skey[q]
            if skey[q - 1] <= kv:
                continue
            v = order[q]
            b = q - 1
            while b >= 0 and skey[b] > kv:
                skey[b + 1] = skey[b]
                order[b + 1] = order[b]
                b -= 1
            skey[b + 1] = kv
            order[b + 1] = v
        if record:
            rec_status[s, k + 1] = status
            for p in range(n):
                rec_order[s, k + 1, p] = order[p]
                rec_sorted[s, k + 1, p] = skey[p]
            for i in range(n):
                rec_T[s, k + 1, i] = key[i]
        if sc_left > 0:
            sc_left -= 1
        elif vsc_left > 0:
            vsc_left -= 1
    for p in range(n):
        i = order[p]
        pos_out[s, i] = p + 1
        time_out[s, i] = T[i]
        ret_out[s, i] = not alive[i]


@_jit(parallel=True, fastmath=_FASTMATH, nogil=True)
def _simulate_kernel(seed, lap0, R, n_sims, gap0, comp0, age0, base, active0, pit_lap, pit_comp,
                     off, lin, quad, sc_prob, vsc_prob, P, pos_out, time_out, ret_out):
    n = gap0.shape[0]
    n_chunks = min(n_sims, 512)
    d3f = np.zeros((1, 1, 1))
    d3i = np.zeros((1, 1, 1), np.int16)
    d2 = np.zeros((1, 1), np.int8)
    for ch in prange(n_chunks):
        T = np.empty(n)
        key = np.empty(n)
        skey = np.empty(n)
        comp = np.empty(n, np.int64)
        age = np.empty(n, np.int64)
        nxt = np.empty(n, np.int64)
        alive = np.empty(n, np.bool_)
        order = np.empty(n, np.int64)
        rlap = np.empty(n, np.int64)
        for s in range(ch, n_sims, n_chunks):
            _one_sim(s, seed, lap0, R, gap0, comp0, age0, base, active0, pit_lap, pit_comp,
                     off, lin, quad, sc_prob, vsc_prob, P, T, key, skey, comp, age, nxt, alive, order, rlap,
                     pos_out, time_out, ret_out, False, d3f, d3f, d3i, d2, d3f)


@_jit(fastmath=_FASTMATH, nogil=True)
def _record_kernel(seed, lap0, R, n_sims, gap0, comp0, age0, base, active0, pit_lap, pit_comp,
                   off, lin, quad, sc_prob, vsc_prob, P, pos_out, time_out, ret_out,
                   rec_T, rec_sorted, rec_order, rec_status, rec_next):
    """Serial version that also records every car's crossing key after every lap."""
    n = gap0.shape[0]
    T = np.empty(n)
    key = np.empty(n)
    skey = np.empty(n)
    comp = np.empty(n, np.int64)
    age = np.empty(n, np.int64)
    nxt = np.empty(n, np.int64)
    alive = np.empty(n, np.bool_)
    order = np.empty(n, np.int64)
    rlap = np.empty(n, np.int64)
    for s in range(n_sims):
        _one_sim(s, seed, lap0, R, gap0, comp0, age0, base, active0, pit_lap, pit_comp,
                 off, lin, quad, sc_prob, vsc_prob, P, T, key, skey, comp, age, nxt, alive, order, rlap,
                 pos_out, time_out, ret_out, True, rec_T, rec_sorted, rec_order, rec_status, rec_next)


@_jit(fastmath=_FASTMATH, nogil=True)
def _focal_kernel(seed, lap0, R, n_sims, jobs_car, jobs_excl, jobs_pit_lap, jobs_pit_comp, jobs_laps,
                  gap0, comp0, age0, base, off, lin, quad, P,
                  rec_T, rec_sorted, rec_order, rec_status, rec_next, pos_out, time_out):
    """Re-simulate single cars on other plans against a recorded field (which does not react).

    Job ``j``: car ``jobs_car[j]`` on plan ``jobs_pit_lap/comp[j]`` for ``jobs_laps[j]`` laps,
    ignoring cars ``jobs_car[j]`` and ``jobs_excl[j]`` of the record. Writes, per simulation, the
    finishing position (meaningful for full-distance jobs) and the crossing key after the last lap.
    The car's random numbers come from its own (simulation, car) stream: the same for every job of
    that car, so its jobs share common random numbers with each other.
    """
    fuel = P[P_FUEL]
    noise = P[P_NOISE]
    ret_p = P[P_RET]
    follow = P[P_FOLLOW]
    pass_delta = P[P_PASS_DELTA]
    pass_prob = P[P_PASS_PROB]
    compress = P[P_COMPRESS]
    lap_ref = P[P_LAP_REF]
    n = gap0.shape[0]
    n_stops = jobs_pit_lap.shape[1]
    for s in range(n_sims):  # simulation outer: its record stays in cache across the jobs
        sk = _sim_key(seed, s)
        for j in range(jobs_car.shape[0]):
            f = jobs_car[j]
            x = jobs_excl[j]
            laps = jobs_laps[j]
            rl = _retire_lap(sk, f, ret_p, R)
            T = gap0[f]
            c = comp0[f]
            a = age0[f]
            nx = 0
            key = T
            for k in range(laps):
                lap = lap0 + k + 1
                status = rec_status[s, k + 1]
                lf = 1.0
                pf = 1.0
                if status == SC:
                    lf = P[P_SC_LF]
                    pf = P[P_SC_PF]
                elif status == VSC:
                    lf = P[P_VSC_LF]
                    pf = P[P_VSC_PF]
                zz = _normal(_draw(sk, k, f, 0))
                lt = (base[f] + off[c] + (lin[c] + quad[c] * a) * a - fuel * k + noise * zz) * lf
                tf = T + lt
                if k == rl:
                    key = _BIG + (R - k) * 1e6 + T
                    break
                if nx < n_stops and jobs_pit_lap[j, nx] == lap:
                    T = tf + P[P_PIT] * pf
                    key = T
                    c = jobs_pit_comp[j, nx]
                    a = 0
                    nx += 1
                    continue
                # the car directly ahead at the start of the lap that stays on track this lap
                # the car directly ahead at the start of the lap (largest start key below T) that
                # stays on track this lap: a branch-free (vectorisable) pass over the sorted field
                bq = 0
                for q in range(n):
                    cand = rec_order[s, k, q]
                    ok = (rec_sorted[s, k, q] < T) & (rec_next[s, k, q] > -1.0) & (cand != f) & (cand != x)
                    bq = max(bq, (q + 1) * ok)
                if bq > 0:
                    bT = rec_next[s, k, bq - 1]
                    if status == SC:
                        gap = tf - bT
                        if gap < follow:
                            tf = bT + follow
                        elif gap < lap_ref:
                            tf = bT + follow + (gap - follow) * compress
                    elif tf < bT + follow:
                        blt = bT - rec_sorted[s, k, bq - 1]
                        if not (status == GREEN and blt - lt > pass_delta
                                and _u_hi(_draw(sk, k, f, 1)) < pass_prob):
                            tf = bT + follow
                T = tf
                key = T
                a += 1
            # finishing position among the recorded cars (excluding itself and the excluded car)
            ahead = 0
            for i in range(n):
                if i != f and i != x and rec_T[s, laps, i] < key:
                    ahead += 1
            pos_out[j, s] = ahead + 1
            time_out[j, s] = key


@_jit(inline="always")
def _rule_ok(mask: int, on: bool) -> bool:
    """Two-compound rule: at least two different dry compounds (bits 0..2) when ``on``."""
    if not on:
        return True
    m = mask & 7
    return (m & (m - 1)) != 0


@_jit(nogil=True)
def _plan_tables(comp0, age0, used, active, rule, allowed, max_stint, cum, pit_cost, R,
                 t0, t1, t2, l2, c2):
    """Deterministic expected cost (s, relative) of every plan with 0, 1 or 2 more stops.

    For car ``i``: ``t0[i]`` no stop; ``t1[i, k, c]`` one stop at in-lap lap0+1+k onto ``c``;
    ``t2[i, k, c]`` the best with a second stop after that (``l2``/``c2``: its k and compound).
    Infeasible plans cost ``1e18``: stints longer than ``max_stint`` (the current set: at least
    one more lap), the two-compound rule (``rule[i]``), compounds not ``allowed[i]``.
    """
    n = comp0.shape[0]
    inf = 1e18
    nc = max_stint.shape[0]
    for i in range(n):
        t0[i] = inf
        for k in range(R):
            for c in range(nc):
                t1[i, k, c] = inf
                t2[i, k, c] = inf
                l2[i, k, c] = -1
                c2[i, k, c] = -1
        if not active[i]:
            continue
        c0 = comp0[i]
        a0 = age0[i]
        mask = used[i]
        if c0 < DRY:
            mask |= 1 << c0
        first_max = max(max_stint[c0] - a0, 1)
        on = rule[i]
        if first_max >= R and _rule_ok(mask, on):
            t0[i] = cum[c0, a0 + R] - cum[c0, a0]
        for k in range(min(R - 1, first_max)):
            first = cum[c0, a0 + k + 1] - cum[c0, a0] + pit_cost[k]
            for c1 in range(nc):
                if not allowed[i, c1]:
                    continue
                m1 = mask | (1 << c1) if c1 < DRY else mask
                rest = R - k - 1
                if rest <= max_stint[c1] and _rule_ok(m1, on):
                    t1[i, k, c1] = first + cum[c1, rest]
                best = inf
                bl = -1
                bc = -1
                for k2 in range(k + 1, min(R - 1, k + 1 + max_stint[c1])):
                    mid = first + cum[c1, k2 - k] + pit_cost[k2]
                    last = R - k2 - 1
                    for cc in range(nc):
                        if not allowed[i, cc] or last > max_stint[cc]:
                            continue
                        m2 = m1 | (1 << cc) if cc < DRY else m1
                        if not _rule_ok(m2, on):
                            continue
                        v = mid + cum[cc, last]
                        if v < best:
                            best = v
                            bl = k2
                            bc = cc
                t2[i, k, c1] = best
                l2[i, k, c1] = bl
                c2[i, k, c1] = bc


# ----------------------------------------------------------------------------------- Python side


@dataclass(slots=True)
class Prepared:
    """Kernel inputs derived once from a field and a model (internal; shared by plans and calls)."""

    lap0: int
    R: int
    gap0: np.ndarray
    comp0: np.ndarray
    age0: np.ndarray
    base: np.ndarray
    active: np.ndarray
    off: np.ndarray
    lin: np.ndarray
    quad: np.ndarray
    sc_prob: np.ndarray
    vsc_prob: np.ndarray
    P: np.ndarray
    max_stint: np.ndarray
    pit_cost: np.ndarray  # float64[R], expected pit loss for in-lap lap0+1+k
    cum: np.ndarray  # float64[5, A], cumulative compound+wear cost of a set from age 0
    rule: np.ndarray  # bool[n]
    allowed: np.ndarray  # bool[n, 5]
    const: np.ndarray  # float64[n], plan-independent part of the remaining race time


def prepare(field_state: FieldState, model: RaceModel) -> Prepared:
    model.check(field_state)
    lap0 = field_state.lap
    R = field_state.laps_left
    comp0 = field_state.compound.astype(np.int64)
    age0 = field_state.tyre_age.astype(np.int64)
    off, lin, quad = model.compound_offset_s, model.deg_linear_s, model.deg_quadratic_s
    base = field_state.pace_s - model.tyre_s(comp0, age0.astype(np.float64))
    base = np.where(field_state.active, base, 0.0)
    active = field_state.active
    lap_ref = float(np.median(field_state.pace_s[active])) if active.any() else 90.0
    P = np.zeros(N_PARAMS)
    P[P_FUEL] = model.fuel_s_per_lap
    P[P_PIT] = model.pit_loss_s
    P[P_SC_PF] = model.pit_loss_sc_factor
    P[P_VSC_PF] = model.pit_loss_vsc_factor
    P[P_SC_MEAN] = model.sc_laps
    P[P_VSC_MEAN] = model.vsc_laps
    P[P_SC_LF] = model.sc_lap_factor
    P[P_VSC_LF] = model.vsc_lap_factor
    P[P_NOISE] = model.lap_noise_s
    P[P_RET] = model.retirement_prob
    P[P_PASS_DELTA] = model.pass_delta_s
    P[P_PASS_PROB] = model.pass_prob
    P[P_FOLLOW] = model.follow_gap_s
    P[P_COMPRESS] = model.sc_compress
    P[P_LAP_REF] = lap_ref
    sc_prob = np.ascontiguousarray(model.sc_prob[lap0:field_state.total_laps])
    vsc_prob = np.ascontiguousarray(model.vsc_prob[lap0:field_state.total_laps])
    # P(SC / VSC out on lap l) ≈ deployments during the previous mean-duration laps (capped at 1)
    def out_prob(p: np.ndarray, mean: float) -> np.ndarray:
        w = max(round(mean), 1)
        c = np.concatenate([[0.0], np.cumsum(p)])
        idx = np.arange(1, p.size + 1)
        return np.asarray(np.minimum(c[idx] - c[np.maximum(idx - w, 0)], 1.0))

    p_sc = out_prob(model.sc_prob[: field_state.total_laps], model.sc_laps)[lap0:]
    p_vsc = np.minimum(out_prob(model.vsc_prob[: field_state.total_laps], model.vsc_laps)[lap0:], 1.0 - p_sc)
    pit_cost = model.pit_loss_s * (1.0 - p_sc * (1.0 - model.pit_loss_sc_factor)
                                   - p_vsc * (1.0 - model.pit_loss_vsc_factor))
    A = int(age0.max(initial=0)) + R + 2
    ages = np.arange(A, dtype=np.float64)
    per_lap = model.tyre_s(np.arange(len(COMPOUNDS))[:, None], ages[None, :])
    cum = np.zeros((len(COMPOUNDS), A + 1))
    cum[:, 1:] = np.cumsum(per_lap, axis=1)
    wet = comp0 >= DRY
    rule = np.logical_and(model.two_compound_rule, ~wet)
    allowed = np.zeros((field_state.n, len(COMPOUNDS)), np.bool_)
    allowed[~wet, :DRY] = True
    allowed[wet, DRY:] = True
    const = field_state.gap_s + R * base - model.fuel_s_per_lap * R * (R - 1) / 2.0
    return Prepared(lap0, R, np.ascontiguousarray(field_state.gap_s), comp0, age0, np.ascontiguousarray(base),
                    np.ascontiguousarray(active), off, lin, quad, sc_prob, vsc_prob, P,
                    model.stint_limits(field_state.total_laps), pit_cost, cum, rule, allowed, const)


@dataclass(slots=True)
class PlanTables:
    """Deterministic expected remaining race time (s) of plans, per car (see ``_plan_tables``)."""

    t0: np.ndarray  # [n] no more stop
    t1: np.ndarray  # [n, R, 5] one stop at in-lap lap+1+k onto compound c
    t2: np.ndarray  # [n, R, 5] that stop and then the best second stop
    l2: np.ndarray  # [n, R, 5] k of the second stop (-1 none)
    c2: np.ndarray  # [n, R, 5]
    lap0: int

    def best(self, i: int) -> tuple[float, Strategy]:
        """Car ``i``'s best plan and its expected time (inf when no plan is feasible)."""
        best_t = float(self.t0[i])
        best = Strategy(())
        k1, c1 = np.unravel_index(int(np.argmin(self.t1[i])), self.t1[i].shape)
        if self.t1[i, k1, c1] < best_t:
            best_t = float(self.t1[i, k1, c1])
            best = Strategy(((self.lap0 + 1 + int(k1), COMPOUNDS[int(c1)]),))
        k2, c2 = np.unravel_index(int(np.argmin(self.t2[i])), self.t2[i].shape)
        if self.t2[i, k2, c2] < best_t:
            best_t = float(self.t2[i, k2, c2])
            best = self.two_stop(i, int(k2), int(c2))
        return (best_t if best_t < 1e17 else math.inf), best

    def two_stop(self, i: int, k: int, c: int) -> Strategy:
        return Strategy(((self.lap0 + 1 + k, COMPOUNDS[c]),
                         (self.lap0 + 1 + int(self.l2[i, k, c]), COMPOUNDS[int(self.c2[i, k, c])])))


def tables(field_state: FieldState, model: RaceModel) -> tuple[Prepared, PlanTables]:
    """Kernel inputs and the deterministic plan tables of every car."""
    prep = prepare(field_state, model)
    n = field_state.n
    R = prep.R
    nc = len(COMPOUNDS)
    t0 = np.empty(n)
    t1 = np.empty((n, R, nc))
    t2 = np.empty((n, R, nc))
    l2 = np.empty((n, R, nc), np.int64)
    c2 = np.empty((n, R, nc), np.int64)
    _plan_tables(prep.comp0, prep.age0, field_state.used_dry.astype(np.int64), prep.active, prep.rule,
                 prep.allowed, prep.max_stint, prep.cum, prep.pit_cost, R, t0, t1, t2, l2, c2)
    const = prep.const[:, None, None]
    return prep, PlanTables(t0 + prep.const, t1 + const, t2 + const, l2, c2, prep.lap0)


def expected_plans(field_state: FieldState, model: RaceModel) -> Plans:
    """Each active car's own best plan (0, 1 or 2 more stops) by deterministic expected race time.

    Obeys the two-compound rule (dry race) and the sensible maximum stint length
    (:meth:`RaceModel.stint_limits`); expected pit loss is reduced by the chance of an SC/VSC
    being out on the in-lap. A car with no feasible plan (e.g. it can no longer satisfy the rule)
    gets no stop.
    """
    _, tabs = tables(field_state, model)
    return plans_from_tables(field_state, tabs)


def plans_from_tables(field_state: FieldState, tables: PlanTables) -> Plans:
    plans = Plans.none(field_state.n)
    for i in np.flatnonzero(field_state.active):
        plans.set(int(i), tables.best(int(i))[1])
    return plans


def _as_plans(plans: Plans | tuple[np.ndarray, np.ndarray], n: int) -> Plans:
    if isinstance(plans, tuple):
        plans = Plans(*plans)
    pit_lap = np.full((n, MAX_STOPS), -1, np.int64)
    pit_comp = np.full((n, MAX_STOPS), -1, np.int64)
    pl = np.asarray(plans.pit_lap, dtype=np.int64)
    pc = np.asarray(plans.pit_compound, dtype=np.int64)
    if pl.shape != pc.shape or pl.ndim != 2 or pl.shape[0] != n or pl.shape[1] > MAX_STOPS:
        raise ValueError(f"plans must be int arrays [n={n}, <= {MAX_STOPS}], got {pl.shape} and {pc.shape}")
    if np.any((pl >= 0) & ((pc < 0) | (pc >= len(COMPOUNDS)))):
        raise ValueError("plans: every stop needs a compound index into COMPOUNDS")
    pit_lap[:, : pl.shape[1]] = pl
    pit_comp[:, : pc.shape[1]] = pc
    return Plans(pit_lap, pit_comp)


def simulate(field_state: FieldState, model: RaceModel, plans: Plans | tuple[np.ndarray, np.ndarray] | None = None,
             n_sims: int = 1000, seed: int = 0) -> SimResult:
    """Simulate the rest of the race ``n_sims`` times, every car interacting (see the module doc).

    ``plans``: pit_lap[n, MAX_STOPS] (in-laps, -1 = none) and pit_compound[n, MAX_STOPS]
    (indices into COMPOUNDS), as :class:`Plans` or a tuple; ``None`` → :func:`expected_plans`.
    Runs on numba's threads (``NUMBA_NUM_THREADS``); the result depends only on ``seed``.
    """
    if n_sims < 1:
        raise ValueError("n_sims must be >= 1")
    prep = prepare(field_state, model)
    n = field_state.n
    p = expected_plans(field_state, model) if plans is None else _as_plans(plans, n)
    pos = np.empty((n_sims, n), np.int16)
    times = np.empty((n_sims, n))
    ret = np.empty((n_sims, n), np.bool_)
    _simulate_kernel(_seed(seed), prep.lap0, prep.R, n_sims, prep.gap0, prep.comp0, prep.age0, prep.base,
                     prep.active, p.pit_lap, p.pit_compound, prep.off, prep.lin, prep.quad, prep.sc_prob,
                     prep.vsc_prob, prep.P, pos, times, ret)
    times[ret] = np.nan
    return SimResult(field_state.numbers.copy(), pos, times, ret)


def _seed(seed: int) -> np.uint64:
    return np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)


@dataclass(slots=True)
class FieldRecord:
    """One recorded Monte Carlo of the whole field (internal to :mod:`strategy.calls`)."""

    rec_T: np.ndarray  # float64[S, R+1, n] crossing key of each car after k laps
    rec_sorted: np.ndarray  # float64[S, R+1, n] the same keys sorted
    rec_order: np.ndarray  # int16[S, R+1, n] car index by rank
    rec_status: np.ndarray  # int8[S, R+1] GREEN / SC / VSC of lap k
    rec_next: np.ndarray  # float64[S, R+1, n] by start rank of lap k+1: key after it, -1e18 if not on track
    positions: np.ndarray  # int16[S, n]


def record_field(prep: Prepared, plans: Plans, n_sims: int, seed: int) -> FieldRecord:
    n = prep.gap0.shape[0]
    R = prep.R
    rec_T = np.empty((n_sims, R + 1, n))
    rec_sorted = np.empty((n_sims, R + 1, n))
    rec_order = np.empty((n_sims, R + 1, n), np.int16)
    rec_status = np.empty((n_sims, R + 1), np.int8)
    rec_next = np.empty((n_sims, R + 1, n))
    pos = np.empty((n_sims, n), np.int16)
    times = np.empty((n_sims, n))
    ret = np.empty((n_sims, n), np.bool_)
    _record_kernel(_seed(seed), prep.lap0, R, n_sims, prep.gap0, prep.comp0, prep.age0, prep.base, prep.active,
                   plans.pit_lap, plans.pit_compound, prep.off, prep.lin, prep.quad, prep.sc_prob, prep.vsc_prob,
                   prep.P, pos, times, ret, rec_T, rec_sorted, rec_order, rec_status, rec_next)
    return FieldRecord(rec_T, rec_sorted, rec_order, rec_status, rec_next, pos)


def run_focal(prep: Prepared, rec: FieldRecord, seed: int, cars: np.ndarray, excl: np.ndarray,
              pit_lap: np.ndarray, pit_comp: np.ndarray, laps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions int64[J, S] and crossing keys float64[J, S] of the focal re-simulation jobs."""
    S = rec.rec_status.shape[0]
    J = cars.shape[0]
    pos = np.empty((J, S), np.int64)
    key = np.empty((J, S))
    _focal_kernel(_seed(seed), prep.lap0, prep.R, S, cars, excl, pit_lap, pit_comp, laps,
                  prep.gap0, prep.comp0, prep.age0, prep.base, prep.off, prep.lin, prep.quad, prep.P,
                  rec.rec_T, rec.rec_sorted, rec.rec_order, rec.rec_status, rec.rec_next, pos, key)
    return pos, key
