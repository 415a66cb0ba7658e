"""Polars loading of lap tables in the ``laps_pool`` format (FastF1 lap tables, one row per
driver per lap; see ``laps_pool/SCHEMA.md``).

:func:`load_laps` reads one or many CSVs and returns the columns the strategy models use, with
session times as float seconds and three columns added: ``year`` (from the file name, e.g.
``..._2021.csv``, else the ``year`` argument), ``circuit`` (:func:`strategy.circuits.resolve` of
the event name in that year) and ``race`` (``"2021-01-grand_prix"``: year, round, session kind).
Columns computed over the whole race (DeltaToRep, FuelAdjLapTime, IsValid, …) are dropped: they
leak the future.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl

from strategy import circuits

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LAPS_POOL = SHARED_DATA / "laps_pool"
ERGAST = SHARED_DATA / "ergast"

# Columns read from a lap table (all others are ignored).
COLUMNS: dict[str, type[pl.DataType] | pl.DataType] = {
    "Time": pl.Utf8,
    "Driver": pl.Utf8,
    "DriverNumber": pl.Utf8,
    "LapTime": pl.Float64,
    "LapNumber": pl.Float64,
    "Stint": pl.Float64,
    "PitOutTime": pl.Utf8,
    "PitInTime": pl.Utf8,
    "Compound": pl.Utf8,
    "TyreLife": pl.Float64,
    "Team": pl.Utf8,
    "TrackStatus": pl.Utf8,
    "Position": pl.Float64,
    "RoundNumber": pl.Int64,
    "EventName": pl.Utf8,
}

_TIMEDELTA = r"^(?:(-?\d+) days? )?(\d+):(\d+):(\d+(?:\.\d+)?)$"


def timedelta_seconds(col: str) -> pl.Expr:
    """``"0 days 00:39:14.871000"`` (pandas Timedelta as text) → 2354.871; empty → null."""
    c = pl.col(col).str.strip_chars()
    parts = [c.str.extract(_TIMEDELTA, i).cast(pl.Float64) for i in (1, 2, 3, 4)]
    return (parts[0].fill_null(0.0) * 86400.0 + parts[1] * 3600.0 + parts[2] * 60.0 + parts[3]).alias(col)


def pool_files(
    kind: str = "grand_prix", years: Iterable[int] | None = None, root: str | Path = LAPS_POOL
) -> list[Path]:
    """The ``laps_pool`` CSVs of one kind (``grand_prix`` or ``sprint``), optionally of some years."""
    wanted = None if years is None else set(years)
    out = []
    for path in sorted((Path(root) / kind).glob("*.csv")):
        year = year_of(path)
        if wanted is None or year in wanted:
            out.append(path)
    return out


def year_of(path: str | Path) -> int | None:
    m = re.search(r"(19|20)\d{2}", Path(path).stem)
    return int(m.group(0)) if m else None


def kind_of(path: str | Path) -> str:
    return "sprint" if "sprint" in Path(path).name.lower() else "grand_prix"


def file_digest(paths: Sequence[str | Path]) -> str:
    """SHA-256 over the files' contents, in order (the training data's identity)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def read_one(path: str | Path, year: int | None = None) -> pl.DataFrame:
    """One lap table → the normalized frame (see module doc)."""
    path = Path(path)
    header = pl.read_csv(path, n_rows=0).columns
    missing = [c for c in ("Driver", "LapTime", "LapNumber", "Time") if c not in header]
    if missing:
        raise ValueError(f"{path.name}: not a lap table in the laps_pool format (missing columns {missing})")
    present = {k: v for k, v in COLUMNS.items() if k in header}
    df = pl.read_csv(path, columns=list(present), schema_overrides=present, infer_schema_length=0)
    for col, dtype in COLUMNS.items():
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=dtype).alias(col))
    file_year = year_of(path) or year
    if file_year is None:
        raise ValueError(f"{path.name}: no year in the file name; pass year=")
    kind = kind_of(path)
    df = df.with_columns(
        timedelta_seconds("Time"),
        timedelta_seconds("PitInTime"),
        timedelta_seconds("PitOutTime"),
        pl.col("LapNumber").cast(pl.Int32),
        pl.col("Stint").cast(pl.Int32),
        pl.col("TrackStatus").fill_null("").str.replace(r"\.0$", ""),
        pl.col("Compound").fill_null("UNKNOWN").str.to_uppercase(),
        pl.col("Team").fill_null("?"),
        pl.lit(file_year, dtype=pl.Int32).alias("year"),
        pl.lit(kind).alias("kind"),
    )
    events = df.select("EventName").unique()["EventName"].to_list()
    keys = {e: circuits.resolve(e, file_year) if e else None for e in events}
    df = df.with_columns(
        pl.col("EventName").replace_strict(keys, default=None, return_dtype=pl.Utf8).alias("circuit"),
        pl.format("{}-{}-{}", pl.col("year"), pl.col("RoundNumber").cast(pl.Utf8).str.zfill(2), pl.col("kind")).alias(
            "race"
        ),
    )
    return df.filter(pl.col("LapNumber").is_not_null() & pl.col("Driver").is_not_null())


def load_laps(paths: str | Path | Sequence[str | Path], year: int | None = None) -> pl.DataFrame:
    """One or many lap tables, concatenated and sorted by race, driver, lap."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise ValueError("no lap tables given")
    frames = [read_one(p, year) for p in paths]
    return pl.concat(frames, how="vertical").sort("race", "Driver", "LapNumber")


def summary(df: pl.DataFrame) -> dict[str, object]:
    """Rows, races and years of a loaded frame (for manifests and reports)."""
    return {
        "rows": df.height,
        "races": df["race"].n_unique(),
        "years": sorted(int(y) for y in df["year"].unique().to_list()),
    }
