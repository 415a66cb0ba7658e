"""Compare the final contents of a drill run with those of an uninterrupted run (pure: no I/O).

Both sides are :class:`~infra.drills.contents.Contents` documents (plain JSON: Redis, PostgreSQL
and output-topic contents of one race, see that module). Every compared structure is a
*category* (``redis.events``, ``pg.laps``, ``outputs.events``, ...) of keyed items, and for each
one the comparison counts:

- ``lost``: keys of the reference missing from the drill run;
- ``duplicated``: surplus copies of a key that must be unique (a Redis stream entry per event
  id, a PostgreSQL row per primary key);
- ``differed``: keys present on both sides whose content differs (volatile fields excluded,
  see :data:`VOLATILE`);
- ``extra``: keys only the drill run has (something was produced that an uninterrupted run
  does not produce);
- ``duplicated_output``: surplus copies of an event id on the output topics, which consumers
  de-duplicate by ``event_id``: reported, not counted as ``duplicated``.

``differed + extra`` is reported as ``wrong``: results that are there but not right.

Strategy calls: a call is made from the state at the end of a lap, with a simulation seeded by
the race id and the lap, so it is deterministic, except that the calls for a lap go ahead
without a car missing from its end once the leader is two laps further on and 15 s of
wall-clock time have passed (``dataflows.race.schedule.STRAGGLER_GRACE_S``). So the keys (which
car got a call after which lap) are always compared, and the content of a lap's calls only when
both runs called the same cars after that lap; laps where the sets differ are named in
``details`` (their missing calls count as lost, surplus ones as extra).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: fields that legitimately differ between two runs of the same race, per category
VOLATILE: dict[str, frozenset[str]] = {
    # versions count the records applied and the snapshots written; they are not content (the
    # records applied are compared on their own, as ``redis.applied``). A snapshot's ``reason`` says
    # whether the batch that produced it held a timing-line record or only telemetry: for the final
    # snapshot that is the arrival order of the last records of the race, not the race
    "redis.state": frozenset({"version", "reason"}),
    "redis.race_summary": frozenset({"version"}),
    "pg.race": frozenset({"board_version", "updated_at"}),
    "pg.standings": frozenset({"version"}),
    "outputs.leaderboard": frozenset({"version", "reason"}),
}

#: how many differing keys each category names in ``details``
FIRST = 5


@dataclass
class Tally:
    """The comparison of one category."""

    compared: int = 0
    lost: int = 0
    duplicated: int = 0
    differed: int = 0
    extra: int = 0
    duplicated_output: int = 0
    first: list[str] = field(default_factory=list)
    note: str | None = None

    def name(self, what: str) -> None:
        if len(self.first) < FIRST:
            self.first.append(what)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.differed or self.extra)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"compared": self.compared}
        for name in ("lost", "duplicated", "differed", "extra", "duplicated_output"):
            value = getattr(self, name)
            if value:
                out[name] = value
        if self.first:
            out["first"] = self.first
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class Comparison:
    """All categories; the totals are what a drill reports."""

    tallies: dict[str, Tally] = field(default_factory=dict)

    def total(self, what: str) -> int:
        return sum(getattr(t, what) for t in self.tallies.values())

    @property
    def lost(self) -> int:
        return self.total("lost")

    @property
    def duplicated(self) -> int:
        return self.total("duplicated")

    @property
    def wrong(self) -> int:
        return self.total("differed") + self.total("extra")

    @property
    def duplicated_output(self) -> int:
        return self.total("duplicated_output")

    @property
    def clean(self) -> bool:
        return all(t.clean for t in self.tallies.values())

    def details(self) -> dict[str, Any]:
        """Per category: what was compared, and what differed (clean categories say only how many)."""
        return {name: t.as_dict() for name, t in self.tallies.items()}


def diff_fields(ref: Any, got: Any, skip: frozenset[str] = frozenset(), path: str = "") -> list[str]:
    """Paths where ``got`` differs from ``ref`` (nested dicts and lists), ``skip``ped keys aside.

    >>> diff_fields({"a": 1, "b": {"c": [1, 2]}, "v": 3}, {"a": 1, "b": {"c": [1, 5]}, "v": 4}, frozenset({"v"}))
    ['b.c[1]']
    """
    if isinstance(ref, dict) and isinstance(got, dict):
        out: list[str] = []
        for key in sorted(set(ref) | set(got), key=str):
            if key in skip:
                continue
            sub = f"{path}.{key}" if path else str(key)
            if key not in ref or key not in got:
                out.append(sub)
            else:
                out.extend(diff_fields(ref[key], got[key], frozenset(), sub))
        return out
    if isinstance(ref, list) and isinstance(got, list):
        if len(ref) != len(got):
            return [f"{path}[len {len(ref)}→{len(got)}]"]
        out = []
        for i, (a, b) in enumerate(zip(ref, got, strict=True)):
            out.extend(diff_fields(a, b, frozenset(), f"{path}[{i}]"))
        return out
    return [] if ref == got else [path or "value"]


def compare_keyed(ref: Mapping[str, Any], got: Mapping[str, Any], counts: Mapping[str, int] | None = None,
                  skip: frozenset[str] = frozenset(), content: Iterable[str] | None = None,
                  output: bool = False) -> Tally:
    """Compare two ``key → item`` maps.

    ``counts``: how many copies of each key the drill run holds (absent: one each); surplus copies
    count as ``duplicated``, or as ``duplicated_output`` when ``output``. ``content``: the keys
    whose content is compared (default: all present on both sides).
    """
    t = Tally(compared=len(ref))
    for key in sorted(ref, key=_natural):
        if key not in got:
            t.lost += 1
            t.name(f"lost {key}")
    for key in sorted(got, key=_natural):
        if key not in ref:
            t.extra += 1
            t.name(f"extra {key}")
    for key, n in sorted((counts or {}).items(), key=lambda kv: _natural(kv[0])):
        if n > 1:
            if output:
                t.duplicated_output += n - 1
            else:
                t.duplicated += n - 1
                t.name(f"{n}x {key}")
    wanted = set(ref) & set(got) if content is None else set(content) & set(ref) & set(got)
    for key in sorted(wanted, key=_natural):
        fields = diff_fields(ref[key], got[key], skip)
        if fields:
            t.differed += 1
            t.name(f"{key}: {', '.join(fields[:3])}")
    return t


def compare_one(ref: Any, got: Any, skip: frozenset[str] = frozenset()) -> Tally:
    """Compare one item (a document that exists once): lost when missing, differed when not equal."""
    t = Tally(compared=0 if ref is None else 1)
    if ref is None:
        if got is not None:
            t.extra = 1
            t.name("present only in the drill run")
        return t
    if got is None:
        t.lost = 1
        t.name("missing")
        return t
    fields = diff_fields(ref, got, skip)
    if fields:
        t.differed = 1
        t.name(", ".join(fields[:FIRST]))
    return t


def _natural(key: str) -> tuple[Any, ...]:
    """Sort ``"10:4"`` after ``"9:4"``: numeric parts as numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in str(key).replace(":", " ").split())


def _calls_by_lap(calls: Mapping[str, Any]) -> dict[str, set[str]]:
    laps: dict[str, set[str]] = {}
    for key in calls:
        lap, _, driver = key.partition(":")
        laps.setdefault(lap, set()).add(driver)
    return laps


def compare_calls(ref: Mapping[str, Any], got: Mapping[str, Any], counts: Mapping[str, int] | None = None,
                  output: bool = False) -> Tally:
    """Strategy calls keyed ``"<lap>:<driver>"``: keys always, content where the lap called the same cars."""
    ref_laps, got_laps = _calls_by_lap(ref), _calls_by_lap(got)
    same = {lap for lap, cars in ref_laps.items() if got_laps.get(lap) == cars}
    content = [k for k in ref if k.partition(":")[0] in same]
    t = compare_keyed(ref, got, counts, content=content, output=output)
    uneven = sorted((set(ref_laps) | set(got_laps)) - same, key=_natural)
    if uneven:
        t.note = (f"laps whose calls named other cars than the reference's (content not compared): "
                  f"{', '.join(uneven[:10])}")
    return t


def count(n: int | None, what: str) -> dict[str, Any]:
    """A category that is a count of things, ``what`` they are (``None``: unknown)."""
    return {"kind": "count", "item": n, "what": what}


def compare_count(ref: int | None, got: int | None, what: str) -> Tally:
    """Fewer than the reference: the difference is lost; more: named in a note, not counted (a count
    cannot say which are surplus, nor whether applying one twice did any harm)."""
    t = Tally(compared=ref or 0)
    if ref is None:
        return t
    have = got or 0
    if have < ref:
        t.lost = ref - have
        t.name(f"{ref - have:,} {what} fewer than the uninterrupted run ({have:,} of {ref:,})")
    elif have > ref:
        t.note = f"{have - ref:,} {what} more than the uninterrupted run ({have:,} of {ref:,})"
    return t


def one(item: Any) -> dict[str, Any]:
    """A category holding one document (``None``: absent)."""
    return {"kind": "one", "item": item}


def keyed(items: Mapping[str, Any], counts: Mapping[str, int] | None = None, kind: str = "keyed") -> dict[str, Any]:
    """A category of ``key → item``; ``counts``: copies of each key where more than one can exist."""
    return {"kind": kind, "items": dict(items), "counts": {k: n for k, n in (counts or {}).items() if n != 1}}


def calls(items: Mapping[str, Any], counts: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A category of strategy calls keyed ``"<lap>:<driver>"`` (see the module docstring)."""
    return keyed(items, counts, kind="calls")


def compare_contents(ref: Mapping[str, Any], got: Mapping[str, Any]) -> Comparison:
    """Every category of two :class:`~infra.drills.contents.Contents` documents.

    A category absent from the drill run compares as empty (everything lost); one absent from
    the reference is not compared.
    """
    c = Comparison()
    for section in ("redis", "pg", "outputs"):
        r_sec, g_sec = ref.get(section) or {}, got.get(section) or {}
        output = section == "outputs"
        for name, r_cat in r_sec.items():
            cat = f"{section}.{name}"
            g_cat = g_sec.get(name) or {}
            skip = VOLATILE.get(cat, frozenset())
            if r_cat["kind"] == "one":
                c.tallies[cat] = compare_one(r_cat["item"], g_cat.get("item"), skip)
            elif r_cat["kind"] == "count":
                c.tallies[cat] = compare_count(r_cat["item"], g_cat.get("item"), r_cat.get("what", "items"))
            elif r_cat["kind"] == "calls":
                c.tallies[cat] = compare_calls(r_cat["items"], g_cat.get("items") or {}, g_cat.get("counts"), output)
            else:
                c.tallies[cat] = compare_keyed(r_cat["items"], g_cat.get("items") or {}, g_cat.get("counts"), skip,
                                               output=output)
    return c
