"""The common shape of every source of input: one race (session) as :mod:`schemas.model` records.

A :class:`Source` has a ``race_id``, yields its records in event-time order (the ``Session``
record first, then race control, laps and telemetry by session time: :func:`record_ts`), and
names its drivers (:meth:`Source.codes`, read by the replay report). A recorded source (a lap
table, a capture, an OpenF1 download) builds a :class:`RecordedRace`; a live one yields records
as they arrive; :mod:`simulator.sources.produce` takes either to the input topics, paced or not.

The race-control records that the recorded sources derive the same way (lights out, a
retirement, the chequered flag) and their event ids are built here, once (:func:`race_start`,
:func:`retirement`, :func:`chequered`, :func:`session_event_id`, :func:`lap_event_id`): an event
id depends only on the facts, so converting the same input twice yields the same ids (the
synthetic race model uses the same scheme for its session and laps).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from schemas.model import Control, ControlKind, InputRecord, Lap, Session, Telemetry, Weather


class Source(Protocol):
    """One race's input records, from wherever they come."""

    race_id: str

    def records(self) -> Iterator[InputRecord]:
        """The race's records in event-time order, the ``Session`` record first."""
        ...

    def codes(self) -> dict[int, str]:
        """Driver number → three-letter code (complete once :meth:`records` is exhausted)."""
        ...


def record_ts(record: InputRecord) -> int:
    """Event time of a record: its session time (ms); the session record sits at 0."""
    if isinstance(record, Telemetry | Control | Weather):
        return record.ts_ms
    if isinstance(record, Lap):
        return record.crossing_ms
    return 0


def codes_of(session: Session) -> dict[int, str]:
    """Driver number → code, from a session record."""
    return {d.number: d.code for d in session.drivers}


@dataclass(slots=True)
class RecordedRace:
    """A race whose records are all known: its session, laps, race-control records and weather.

    :meth:`records` yields them in session-time order; at the same instant race control and the
    weather come before the laps, except a retirement or the chequered flag, which follow the laps
    of that instant.
    """

    race_id: str
    session: Session
    laps: list[Lap]
    controls: list[Control]
    weather: list[Weather] = field(default_factory=list)

    def records(self) -> Iterator[InputRecord]:
        yield self.session
        timed: list[tuple[int, int, InputRecord]] = []
        for c in self.controls:
            rank = 2 if c.kind in (ControlKind.CHEQUERED_FLAG, ControlKind.RETIREMENT) else 0
            timed.append((c.ts_ms, rank, c))
        timed.extend((w.ts_ms, 0, w) for w in self.weather)
        timed.extend((lap.crossing_ms, 1, lap) for lap in self.laps)
        timed.sort(key=lambda t: (t[0], t[1]))
        for _ts, _rank, record in timed:
            yield record

    def codes(self) -> dict[int, str]:
        return codes_of(self.session)


# ------------------------------------------------------------------------------ shared records


def session_event_id(race_id: str) -> str:
    return f"{race_id}:session"


def lap_event_id(race_id: str, number: int, lap: int) -> str:
    """A car's lap: ``{race_id}:lap:{number}:{lap}``."""
    return f"{race_id}:lap:{number}:{lap}"


def race_start(race_id: str, message: str = "Lights out") -> Control:
    """Lights out (or the green light of a session without a start), at session time 0."""
    return Control(f"{race_id}:start", race_id, 0, ControlKind.RACE_START, message, lap=1)


def retirement(race_id: str, number: int, code: str, ts_ms: int, laps_done: int) -> Control:
    """A car stops completing laps before the flag (``lap`` = its laps completed + 1)."""
    return Control(f"{race_id}:retired:{number}", race_id, ts_ms, ControlKind.RETIREMENT,
                   f"{code} retires on lap {laps_done + 1}", driver_number=number, lap=laps_done + 1)


def chequered(race_id: str, ts_ms: int, lap: int) -> Control:
    """The chequered flag at the winner's final crossing."""
    return Control(f"{race_id}:chequered", race_id, ts_ms, ControlKind.CHEQUERED_FLAG, "Chequered flag", lap=lap)


def default_race_id(prefix: str, *parts: str) -> str:
    """A race id from a source's name and what identifies the input (file name, year, round).

    >>> default_race_id("replay", "Bahrain 2022", "2022", "1")
    'replay-bahrain-2022-2022-1'
    """
    return f"{prefix}-" + re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
