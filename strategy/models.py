"""The strategy models as the dataflow and the web API call them.

:func:`load_models` is the one runtime entry: it reads the versioned artifacts written by
``racewire train`` from the directory it is given (None: the ones shipped in ``strategy/artifacts/``)
once per process and directory; the dataflow and the API pass ``Settings.models_dir``
(``RACEWIRE_MODELS_DIR``) and hand the result to their users (this package reads no settings). It never
raises: a model whose artifact is missing or unreadable falls back to the documented rule-based
constants below, logs a warning and says why in :meth:`StrategyModels.describe` and in every
result (``fallback=True``, ``reason``). Circuits the models have not seen use the global
estimates; the result's ``reason`` says so (that is not a fallback).

Rule-based fallbacks (documented constants, roughly the fitted values of the shipped models):

- lap time: the car's recent pace (median of its last three green laps in the stint; else its
  driver pace, else the field's, else :data:`DEFAULT_LAP_S`) plus two laps of degradation minus two
  laps of fuel burn (the recent laps are on average two laps old), times the status factor;
- degradation: :data:`DEFAULT_DEGRADATION` (s/lap) and :data:`DEFAULT_OFFSETS` (s vs MEDIUM);
- safety car: :data:`DEFAULT_HAZARD` per lap (lap 1, laps 2-5, later laps);
- pit loss: :data:`DEFAULT_PIT_LOSS_S` under green, x0.5 under SC and x0.7 under VSC.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from strategy import circuits
from strategy import features as F
from strategy.features import LapContext

__all__ = [
    "Degradation",
    "LapContext",
    "PitLoss",
    "Prediction",
    "SafetyCarOdds",
    "StrategyModels",
    "load_models",
]

log = logging.getLogger("racewire.strategy.models")

SHIPPED = Path(__file__).resolve().parent / "artifacts"
MODEL_NAMES = ("lap_time", "degradation", "safety_car", "pit_loss")

DEFAULT_LAP_S = 90.0
DEFAULT_STATUS_FACTORS = {"YELLOW": 1.0, "VSC": 1.35, "SC": 1.4, "RED": 1.6}
DEFAULT_DEGRADATION = {"SOFT": 0.08, "MEDIUM": 0.05, "HARD": 0.03, "INTERMEDIATE": 0.05, "WET": 0.05}
DEFAULT_DEG_STDERR = 0.03
DEFAULT_OFFSETS = {"SOFT": -0.3, "MEDIUM": 0.0, "HARD": 0.3, "INTERMEDIATE": 0.0, "WET": 0.0}
DEFAULT_HAZARD = {  # P(deployment during a lap): lap 1, laps 2-5, later laps
    "sc": (0.2, 0.015, 0.008),
    "vsc": (0.05, 0.01, 0.006),
    "red": (0.02, 0.006, 0.0015),
}
DEFAULT_PIT_LOSS_S = 22.0
DEFAULT_SC_FACTOR = 0.5
DEFAULT_VSC_FACTOR = 0.7
RULE = "rule-based"


@dataclass(frozen=True, slots=True)
class Prediction:
    """Predicted lap times (s), one per context, and which model made them."""

    values_s: np.ndarray
    model: str
    fallback: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Degradation:
    """Lap-time increase with tyre age for one compound at one circuit (fuel-corrected)."""

    circuit: str | None
    compound: str
    linear_s_per_lap: float
    quadratic_s_per_lap2: float
    stderr_s_per_lap: float
    offset_s: float  # pace vs MEDIUM at equal age and fuel (negative: faster)
    model: str
    fallback: bool
    reason: str | None = None

    def delta_s(self, ages: Any) -> np.ndarray:
        """Lap-time increase at each tyre age vs age 0 (s)."""
        a = np.asarray(ages, dtype=np.float64)
        return self.linear_s_per_lap * a + self.quadratic_s_per_lap2 * a * a


@dataclass(frozen=True, slots=True)
class SafetyCarOdds:
    """Probabilities that a safety car / VSC / red flag is deployed during a lap."""

    circuit: str | None
    lap: int
    sc: float
    vsc: float
    red: float
    model: str
    fallback: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PitLoss:
    """Time lost by a pit stop (in-lap + out-lap vs racing laps) at a circuit."""

    circuit: str | None
    seconds: float  # under green
    sc_factor: float  # fraction of the green loss under a safety car
    vsc_factor: float  # fraction of the green loss under a VSC
    model: str
    fallback: bool
    reason: str | None = None

    @property
    def sc_seconds(self) -> float:
        return self.seconds * self.sc_factor

    @property
    def vsc_seconds(self) -> float:
        return self.seconds * self.vsc_factor


@dataclass(slots=True)
class _Status:
    status: str = "fallback"
    reason: str | None = None
    files: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class StrategyModels:
    """Every strategy model, loaded once; thread-safe for reading."""

    def __init__(self, directory: Path | None, manifest: dict[str, Any] | None) -> None:
        self.directory = directory
        self.manifest = manifest or {}
        self.version: str = str(self.manifest.get("version", RULE))
        self._status: dict[str, _Status] = {name: _Status() for name in MODEL_NAMES}
        self._booster: Any = None
        self._vocab: dict[str, int] = {}
        self._lap_meta: dict[str, Any] = {}
        self._deg: dict[str, Any] = {}
        self._sc: dict[str, Any] = {}
        self._pit: dict[str, Any] = {}

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as a reference (the directory): a strategist in the dataflow's recovery
        snapshot finds the process's loaded models again instead of storing them."""
        return load_models, (self.directory,)

    # --------------------------------------------------------------------------------------
    # loading

    @classmethod
    def load(cls, directory: str | Path | None = None) -> StrategyModels:
        """Artifacts from ``directory`` (None: the shipped ones), read now (use :func:`load_models`
        for the process's shared copy). Never raises: what cannot be loaded falls back to rules,
        with the reason."""
        path = Path(directory) if directory is not None else SHIPPED
        manifest: dict[str, Any] | None = None
        problem: str | None = None
        try:
            loaded = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
            if not isinstance(loaded, dict) or "models" not in loaded:
                raise ValueError("no 'models' in it")
            manifest = loaded
        except FileNotFoundError:
            problem = f"no manifest.json in {path}: run `racewire train` or set RACEWIRE_MODELS_DIR"
        except (OSError, ValueError) as exc:
            problem = f"unreadable manifest.json in {path} ({exc}): run `racewire train` again"
        self = cls(path, manifest)
        for name in MODEL_NAMES:
            st = self._status[name]
            if problem is not None:
                st.reason = problem
            else:
                try:
                    getattr(self, f"_load_{name}")(path, (manifest or {})["models"][name])
                    st.status, st.reason = "loaded", None
                except Exception as exc:  # a bad artifact must never stop the service
                    st.status, st.reason = (
                        "fallback",
                        f"{name} artifact in {path} unusable: {type(exc).__name__}: {exc}",
                    )
            if st.status != "loaded":
                log.warning("strategy model %s falls back to rules: %s", name, st.reason)
        return self

    def _load_lap_time(self, path: Path, entry: dict[str, Any]) -> None:
        import lightgbm as lgb

        meta = json.loads((path / "lap_time.json").read_text(encoding="utf-8"))
        if list(meta.get("features", [])) != list(F.FEATURES):
            raise ValueError("its features differ from this code's (retrain with `racewire train`)")
        with gzip.open(path / "lap_time.txt.gz", "rt", encoding="utf-8") as f:
            booster = lgb.Booster(model_str=f.read())
        if booster.num_feature() != len(F.FEATURES):
            raise ValueError(f"booster has {booster.num_feature()} features, expected {len(F.FEATURES)}")
        self._booster, self._lap_meta = booster, meta
        self._vocab = {str(k): int(v) for k, v in meta.get("circuits", {}).items()}
        self._status["lap_time"].info = entry

    def _load_degradation(self, path: Path, entry: dict[str, Any]) -> None:
        deg = json.loads((path / "degradation.json").read_text(encoding="utf-8"))
        for comp in ("SOFT", "MEDIUM", "HARD"):
            float(deg["compounds"][comp]["linear_s_per_lap"])
        self._deg = deg
        self._status["degradation"].info = entry

    def _load_safety_car(self, path: Path, entry: dict[str, Any]) -> None:
        sc = json.loads((path / "safety_car.json").read_text(encoding="utf-8"))
        for kind in ("sc", "vsc", "red"):
            rates = sc[kind]["rates_per_lap"]
            [float(rates[b]) for b in ("lap1", "laps2_5", "later")]
        self._sc = sc
        self._status["safety_car"].info = entry

    def _load_pit_loss(self, path: Path, entry: dict[str, Any]) -> None:
        pit = json.loads((path / "pit_loss.json").read_text(encoding="utf-8"))
        float(pit["global_green_s"]), float(pit["sc_factor"]), float(pit["vsc_factor"])
        self._pit = pit
        self._status["pit_loss"].info = entry

    # --------------------------------------------------------------------------------------
    # description

    def describe(self) -> dict[str, Any]:
        """JSON-ready: per model its version, status (loaded/fallback), reason, data, features, metrics."""
        trained_on = self.manifest.get("training_data", {})
        out: dict[str, Any] = {
            "version": self.version,
            "trained_at": self.manifest.get("trained_at"),
            "directory": str(self.directory) if self.directory else None,
            "models": {},
        }
        for name, st in self._status.items():
            info = st.info
            out["models"][name] = {
                "version": self.version if st.status == "loaded" else RULE,
                "status": st.status,
                "reason": st.reason,
                "kind": info.get("kind", RULE),
                "trained_on": {k: trained_on.get(k) for k in ("rows", "races", "years", "sha256")}
                if st.status == "loaded"
                else None,
                "features": info.get("features", []),
                "metrics": info.get("metrics", {}),
            }
        return out

    def _model(self, name: str, label: str) -> tuple[str, bool, str | None]:
        st = self._status[name]
        if st.status == "loaded":
            return f"{label} {self.version}", False, None
        return RULE, True, st.reason

    # --------------------------------------------------------------------------------------
    # circuits

    @staticmethod
    def circuit_key(circuit: str | None) -> str | None:
        """A circuit key (Ergast circuitRef) from a key or any name; None when unknown."""
        if not circuit:
            return None
        return circuit if circuits.known(circuit) else circuits.resolve(circuit)

    # --------------------------------------------------------------------------------------
    # lap time

    def lap_time(self, contexts: Sequence[LapContext]) -> Prediction:
        """Predicted lap time (s) of each context's lap."""
        n = len(contexts)
        if n == 0:
            model, fb, why = self._model("lap_time", "lap-time lightgbm")
            return Prediction(np.empty(0), model, fb, why)
        ctxs = [
            c if c.circuit is None or circuits.known(c.circuit) else _with_circuit(c, self.circuit_key(c.circuit))
            for c in contexts
        ]
        x = F.matrix(ctxs, self._vocab)
        ref = F.reference(x)
        factors = {**DEFAULT_STATUS_FACTORS, **self._lap_meta.get("status_factors", {})}
        status_mult = np.array([_status_factor(int(s), factors) for s in x[:, F.FEATURES.index("track_status")]])
        notes: list[str] = []
        no_ref = np.isnan(ref)
        if no_ref.any():
            typical = self._lap_meta.get("circuit_lap_s", {})
            default = float(typical.get("*", DEFAULT_LAP_S))
            for i in np.flatnonzero(no_ref):
                key = ctxs[i].circuit
                ref[i] = float(typical.get(key, default)) if key else default
            notes.append(f"{int(no_ref.sum())} lap(s) with no pace yet: the circuit's typical green lap")
        model, fallback, reason = self._model("lap_time", "lap-time lightgbm")
        if self._booster is not None:
            green_pred = ref + self._booster.predict(x, num_threads=1)
            green_pred[no_ref] = ref[no_ref]
        else:
            green_pred = np.empty(n)
            for j, c in enumerate(ctxs):
                comp = F.compound_name(c.compound)
                slope = self.degradation(c.circuit, comp).linear_s_per_lap if comp != "UNKNOWN" else 0.0
                green_pred[j] = ref[j] + 2.0 * (slope - F.fuel_s_per_lap(c.total_laps))
        unknown = sorted({str(c.circuit) for c in contexts if c.circuit and self.circuit_key(c.circuit) is None})
        if unknown:
            notes.append(f"unknown circuit(s) {', '.join(unknown)}: global estimates")
        if reason:
            notes.insert(0, reason)
        return Prediction(green_pred * status_mult, model, fallback, "; ".join(notes) or None)

    # --------------------------------------------------------------------------------------
    # degradation

    def degradation(self, circuit: str | None, compound: str) -> Degradation:
        """Fuel-corrected degradation of ``compound`` at ``circuit`` (unknown circuit: compound-wide)."""
        comp = F.compound_name(compound)
        if comp == "UNKNOWN":
            raise ValueError(f"degradation needs a compound ({', '.join(F.COMPOUNDS)}), got {compound!r}")
        key = self.circuit_key(circuit)
        model, fallback, reason = self._model("degradation", "degradation empirical-bayes")
        if fallback:
            return Degradation(
                key,
                comp,
                DEFAULT_DEGRADATION[comp],
                0.0,
                DEFAULT_DEG_STDERR,
                DEFAULT_OFFSETS[comp],
                model,
                True,
                reason,
            )
        glob = self._deg["compounds"].get(comp)
        per = self._deg.get("circuits", {}).get(key or "", {}).get(comp)
        notes = []
        if glob is None:
            return Degradation(
                key,
                comp,
                DEFAULT_DEGRADATION[comp],
                0.0,
                DEFAULT_DEG_STDERR,
                DEFAULT_OFFSETS[comp],
                RULE,
                True,
                f"no {comp} data in the trained model: documented constants",
            )
        src = glob
        if per is not None and "linear_s_per_lap" in per:
            src = per
        elif key is None:
            notes.append(
                f"unknown circuit {circuit!r}: compound-wide estimate" if circuit else "no circuit: compound-wide"
            )
        else:
            notes.append(f"no {comp} data at {key}: compound-wide estimate")
        offset = (per or {}).get("offset_s", glob.get("offset_s", DEFAULT_OFFSETS[comp]))
        return Degradation(
            key,
            comp,
            float(src["linear_s_per_lap"]),
            float(src.get("quadratic_s_per_lap2", 0.0)),
            float(src["stderr_s_per_lap"]),
            float(offset),
            model,
            False,
            "; ".join(notes) or None,
        )

    # --------------------------------------------------------------------------------------
    # safety car

    def safety_car_curve(self, circuit: str | None, total_laps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P(SC), P(VSC), P(red flag) deployed during each lap; index 0 = lap 1."""
        curves, _, _, _ = self._sc_curves(circuit, total_laps)
        return curves

    def safety_car(self, circuit: str | None, lap: int, total_laps: int) -> SafetyCarOdds:
        """P(SC / VSC / red flag deployed during ``lap``) at ``circuit``."""
        if not 1 <= lap <= total_laps:
            raise ValueError(f"lap {lap} outside 1..{total_laps}")
        (sc, vsc, red), key, model, (fallback, reason) = self._sc_curves(circuit, total_laps)
        i = lap - 1
        return SafetyCarOdds(key, lap, float(sc[i]), float(vsc[i]), float(red[i]), model, fallback, reason)

    def _sc_curves(
        self, circuit: str | None, total_laps: int
    ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], str | None, str, tuple[bool, str | None]]:
        if total_laps < 1:
            raise ValueError(f"total_laps must be ≥ 1, got {total_laps}")
        key = self.circuit_key(circuit)
        model, fallback, reason = self._model("safety_car", "safety-car hazard")
        laps = np.arange(1, total_laps + 1)
        bucket = np.where(laps <= 1, 0, np.where(laps <= 5, 1, 2))
        out = []
        notes = []
        for kind in ("sc", "vsc", "red"):
            if fallback:
                p = np.array(DEFAULT_HAZARD[kind])[bucket]
            else:
                m = self._sc[kind]
                rates = np.array([m["rates_per_lap"][b] for b in ("lap1", "laps2_5", "later")], dtype=np.float64)
                entry = m.get("circuits", {}).get(key or "")
                ratio = float(entry["ratio"]) if entry else 1.0
                if entry is None and kind == "sc":
                    notes.append(
                        f"unknown circuit {circuit!r}: global rates" if circuit else "no circuit: global rates"
                    )
                p = 1.0 - np.exp(-rates[bucket] * ratio)
            out.append(p.astype(np.float64))
        why = reason if fallback else ("; ".join(notes) or None)
        return (out[0], out[1], out[2]), key, model, (fallback, why)

    # --------------------------------------------------------------------------------------
    # pit loss

    def pit_loss(self, circuit: str | None) -> PitLoss:
        """Pit-stop time loss at ``circuit`` under green, and the SC / VSC factors."""
        key = self.circuit_key(circuit)
        model, fallback, reason = self._model("pit_loss", "pit-loss median")
        if fallback:
            return PitLoss(key, DEFAULT_PIT_LOSS_S, DEFAULT_SC_FACTOR, DEFAULT_VSC_FACTOR, model, True, reason)
        entry = self._pit.get("circuits", {}).get(key or "")
        note = None
        if entry is None:
            note = f"unknown circuit {circuit!r}: global median" if circuit else "no circuit: global median"
        seconds = float(entry["green_s"]) if entry else float(self._pit["global_green_s"])
        return PitLoss(key, seconds, float(self._pit["sc_factor"]), float(self._pit["vsc_factor"]), model, False, note)


def _with_circuit(c: LapContext, key: str | None) -> LapContext:
    from dataclasses import replace

    return replace(c, circuit=key)


def _status_factor(code: int, factors: dict[str, float]) -> float:
    if code == F.STATUS_SC:
        return float(factors["SC"])
    if code == F.STATUS_VSC:
        return float(factors["VSC"])
    if code == F.STATUS_RED:
        return float(factors["RED"])
    if code == F.STATUS_YELLOW:
        return float(factors["YELLOW"])
    return 1.0


def load_models(directory: str | Path | None = None) -> StrategyModels:
    """The strategy models from ``directory`` (None: the shipped artifacts), loaded once per
    process and directory: the one way the dataflow and the API get them."""
    return _loaded(Path(directory).resolve() if directory is not None else SHIPPED)


@cache
def _loaded(path: Path) -> StrategyModels:
    return StrategyModels.load(path)
