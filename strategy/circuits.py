"""Canonical circuit keys (Ergast ``circuitRef``) from any name a feed or a table uses.

>>> resolve("2021 Bahrain Grand Prix"), resolve("Sakhir"), resolve("Styrian Grand Prix")
('bahrain', 'bahrain', 'red_bull_ring')
>>> resolve("São Paulo Grand Prix"), resolve("Austin"), resolve("Racewire Park")
('interlagos', 'americas', None)

Names are compared case-, accent- and punctuation-insensitively. Event names ("Styrian Grand
Prix") go through the Ergast race calendar: by year when a year is given (``resolve(name,
year=2020)`` or a leading "2020 "), else the most recent use of that name. The table behind this
(``artifacts/circuits.json``, circuits and event names 2014-2025) is derived from the Ergast
database (CC0) by :func:`build_table`; ``racewire train`` rewrites it from ``--ergast``.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any

TABLE_PATH = Path(__file__).resolve().parent / "artifacts" / "circuits.json"
FIRST_YEAR = 2014
ATTRIBUTION = "Derived from the Ergast F1 database (ergast.com), CC0: circuits and race names 2014-2025."

# Names feeds use that are neither an Ergast circuit name, location, nor a race name.
EXTRA_ALIASES: dict[str, str] = {
    "cota": "americas",
    "circuit of the americas": "americas",
    "spa francorchamps": "spa",
    "spa": "spa",
    "monte carlo": "monaco",
    "montreal": "villeneuve",
    "gilles villeneuve": "villeneuve",
    "yas marina": "yas_marina",
    "yas island": "yas_marina",
    "abu dhabi": "yas_marina",
    "las vegas": "vegas",
    "lusail": "losail",
    "mexico city": "rodriguez",
    "hermanos rodriguez": "rodriguez",
    "sao paulo": "interlagos",
    "jose carlos pace": "interlagos",
    "spielberg": "red_bull_ring",
    "barcelona": "catalunya",
    "melbourne": "albert_park",
    "imola": "imola",
    "mugello": "mugello",
    "jeddah": "jeddah",
    "miami": "miami",
    "zandvoort": "zandvoort",
    "portimao": "portimao",
    "algarve": "portimao",
    "nurburgring": "nurburgring",
    "istanbul": "istanbul",
    "suzuka": "suzuka",
    "shanghai": "shanghai",
    "sochi": "sochi",
    "marina bay": "marina_bay",
    "singapore": "marina_bay",
    "baku": "baku",
    "hungaroring": "hungaroring",
    "budapest": "hungaroring",
    "paul ricard": "ricard",
    "le castellet": "ricard",
    "hockenheim": "hockenheimring",
    "monza": "monza",
    "silverstone": "silverstone",
    "interlagos": "interlagos",
    "sakhir": "bahrain",
}


def normalize(name: str) -> str:
    """Lower case, accents dropped, punctuation to single spaces: "São Paulo GP" → "sao paulo gp"."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def build_table(ergast_dir: str | Path, first_year: int = FIRST_YEAR) -> dict[str, Any]:
    """The shipped table from Ergast ``circuits.csv`` and ``races.csv`` (races from ``first_year``)."""
    ergast = Path(ergast_dir)
    with open(ergast / "circuits.csv", newline="", encoding="utf-8") as f:
        circuits = {row["circuitId"]: row for row in csv.DictReader(f)}
    events: dict[str, dict[str, list[int]]] = {}
    used: set[str] = set()
    with open(ergast / "races.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            year = int(row["year"])
            if year < first_year:
                continue
            ref = circuits[row["circuitId"]]["circuitRef"]
            used.add(ref)
            events.setdefault(row["name"], {}).setdefault(ref, []).append(year)
    table_circuits = {
        c["circuitRef"]: [c["name"], c["location"], c["country"]]
        for c in sorted(circuits.values(), key=lambda c: c["circuitRef"])
        if c["circuitRef"] in used
    }
    return {
        "attribution": ATTRIBUTION,
        "circuits": table_circuits,
        "events": {name: {ref: sorted(set(ys)) for ref, ys in refs.items()} for name, refs in sorted(events.items())},
    }


def write_table(table: dict[str, Any], path: str | Path = TABLE_PATH) -> None:
    Path(path).write_text(json.dumps(table, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")


class _Index:
    """Normalized name → circuit key, and normalized event name → [(year, key)]."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.keys: set[str] = set(table.get("circuits", {}))
        self.names: dict[str, str] = {}
        for ref, (name, location, _country) in table.get("circuits", {}).items():
            for alias in (ref, ref.replace("_", " "), name, location):
                self.names.setdefault(normalize(alias), ref)
            stripped = _strip_generic(normalize(name))
            if stripped:
                self.names.setdefault(stripped, ref)
        for alias, ref in EXTRA_ALIASES.items():
            self.names.setdefault(normalize(alias), ref)
        self.events: dict[str, list[tuple[int, str]]] = {}
        for event, refs in table.get("events", {}).items():
            entries = [(int(y), ref) for ref, years in refs.items() for y in years]
            self.events[normalize(event)] = sorted(entries)

    def lookup(self, name: str, year: int | None) -> str | None:
        key = normalize(name)
        m = re.match(r"^(\d{4}) (.+)$", key)
        if m:
            year, key = int(m.group(1)), m.group(2)
        key = re.sub(r"\b(sprint|race|qualifying|sprint shootout)$", "", key).strip()
        key = re.sub(r"\bgp$", "grand prix", key)
        for candidate in (key, _strip_generic(key)):
            if not candidate:
                continue
            if candidate in self.events or f"{candidate} grand prix" in self.events:
                entries = self.events.get(candidate) or self.events[f"{candidate} grand prix"]
                if year is not None:
                    exact = [ref for y, ref in entries if y == year]
                    if exact:
                        return exact[-1]
                    earlier = [ref for y, ref in entries if y <= year]
                    if earlier:
                        return earlier[-1]
                return entries[-1][1]
            if candidate in self.names:
                return self.names[candidate]
        return None


_GENERIC = re.compile(
    r"\b(grand prix|international|autodromo|autodromo nazionale|circuit de|circuit of|circuit|street|raceway|park)\b"
)


def _strip_generic(text: str) -> str:
    return " ".join(_GENERIC.sub(" ", text).split())


@lru_cache(maxsize=1)
def _index() -> _Index:
    try:
        table = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        table = {}
    return _Index(table)


def resolve(name: str | None, year: int | None = None) -> str | None:
    """The Ergast ``circuitRef`` for a circuit, location or event name; ``None`` when unknown."""
    if not name or not name.strip():
        return None
    return _index().lookup(name, year)


def known(key: str | None) -> bool:
    """Whether ``key`` is a circuit key of the shipped table."""
    return key is not None and key in _index().keys


def reload() -> None:
    """Forget the cached table (after ``write_table``)."""
    _index.cache_clear()
