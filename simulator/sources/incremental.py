"""Feed messages one at a time → racewire input records as soon as each is final, so that a
session followed live (``racewire live``) goes into the pipeline while it happens.

The rules are the converter's (:class:`~simulator.sources.livetiming.FeedConverter`); what this
adds is *when* a record can go, without reading the capture to its end:

- the ``Session`` record at the start (drivers, grid, the scheduled laps), once the distance is
  known (``LapCount.TotalLaps``, which the service sends from the start; a capture without it
  holds everything to its end, where the distance is what the converter finds);
- race control (start, track status, messages, penalties) as it arrives;
- a lap once its time is known: the feed's ``LastLapTime`` (it may follow the lap's crossing by up
  to :data:`~simulator.sources.livetiming.LAP_TIME_WAIT_MS`), else the crossing difference once that
  wait is over; an in-lap once the car has left the pit lane (its time in the pit lane is part of
  it); a car's laps in order;
- the chequered flag at the leader's crossing of the scheduled last lap; a car's laps after it took
  the flag are not race laps;
- a retirement when timing marks the car retired and its laps are out; at the end, every car that
  did not take the flag.

What is not final when a lap goes is its deletion by race control, which may come minutes later:
the race-control message goes out as it arrives, and a ``LAP_DELETED`` (``LAP_REINSTATED``)
control names the car and lap, which the dataflow applies to the best laps and the fastest lap.
A capture converted this way in one go (:func:`convert_incrementally`) gives the same records, in
the same order, with the same ids, as the session followed live, whatever the speed it was played
at.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from schemas.model import Control, ControlKind, InputRecord, Lap, Session, Weather
from simulator.sources.base import RecordedRace, chequered, retirement
from simulator.sources.livetiming import (
    LAP_TIME_WAIT_MS,
    FeedConverter,
    FeedMessage,
    LiveTimingError,
    PendingLap,
    _int,
    capture_race_id,
    in_arrival_order,
    read_capture,
)

log = logging.getLogger("racewire.livetiming")

#: race control's verdicts on a lap that went out already
VERDICTS = (ControlKind.LAP_DELETED, ControlKind.LAP_REINSTATED)


class IncrementalConverter:
    """Push messages in arrival order; each push returns the records that became final."""

    def __init__(self, race_id: str, start_on_timing: bool = False) -> None:
        self.conv = FeedConverter(race_id, start_on_timing=start_on_timing)
        self.race_id = race_id
        self.session_sent = False
        self.controls_sent = 0
        self.weather_sent = 0
        self.laps_sent: dict[int, int] = {}  # car → laps sent
        self.crossings_sent: dict[int, list[Lap]] = {}  # car → the laps sent (the rules need them)
        self.next_pending = 0  # index into conv.laps of the first lap not yet sent or dropped
        self.done: set[int] = set()  # cars that took the flag or retired: nothing more of theirs goes
        self.flag_ms: int | None = None
        self.flag_due = False  # the chequered flag is known and goes after the laps of this message
        self.sent_deleted: dict[tuple[int, int], bool] = {}  # (car, lap) → deleted, as it went out
        self.verdicts_seen: frozenset[tuple[int, int, int | None]] = frozenset()
        self.car_laps: dict[int, list[Lap]] = {}  # car → its laps so far (sent or not)
        self.laps_seen = 0  # of conv.laps
        self.retired_sent: set[int] = set()
        self.finished = False

    # ------------------------------------------------------------------ feeding
    def push(self, message: FeedMessage) -> list[InputRecord]:
        self.conv.feed(message)
        return self._due(self.conv._session_ms(message.ts_ms), final=False)

    def finish(self) -> list[InputRecord]:
        """The session is over: whatever still waits goes, and (in a race or sprint) every car that
        did not take the flag retires: at the time timing marked it retired or stopped, else at the flag."""
        if self.conv.t0 is None:
            raise LiveTimingError("the capture never shows the session started (SessionStatus)")
        out = self._due(self.conv._session_ms(self.conv.last_ts), final=True)
        if not self.laps_sent:
            raise LiveTimingError("no car completed a lap in the capture")
        if self.conv.session_kind.timed:
            self.finished = True
            return out  # ordered by best lap: nobody has to take a flag, nobody retires for not taking it
        if self.flag_ms is None:
            total = self.conv.total_laps()
            finals = [lap.crossing_ms for laps in self.crossings_sent.values() for lap in laps if lap.lap == total]
            if finals:
                self.flag_ms = min(finals)
                out.append(chequered(self.race_id, self.flag_ms, total))
        flag = self.flag_ms if self.flag_ms is not None else self.conv._session_ms(self.conv.last_ts)
        for number, car in sorted(self.conv.cars.items()):
            if number in self.retired_sent:
                continue
            sent = self.crossings_sent.get(number, [])
            if sent and sent[-1].crossing_ms >= flag:
                continue  # took the flag
            last = sent[-1].crossing_ms if sent else 0
            gone = car.retired_ms if car.retired_ms is not None else car.stopped_ms
            ts = gone if gone is not None and gone > last else max(last + 1, flag)
            out.append(retirement(self.race_id, number, self.conv.code(number), ts, len(sent)))
            self.retired_sent.add(number)
        self.finished = True
        return out

    # ------------------------------------------------------------------ what is due
    def _scheduled(self) -> int | None:
        return _int(self.conv.state.get("LapCount", {}).get("TotalLaps"))

    def _due(self, now: int, final: bool) -> list[InputRecord]:
        conv = self.conv
        out: list[InputRecord] = []
        if conv.t0 is None:
            return out
        scheduled = self._scheduled()
        if not self.session_sent:
            if scheduled is None and not final and not conv.session_kind.timed:
                return out  # a race's distance is not known yet: everything waits for it
            total = scheduled or conv.total_laps()
            out.append(conv.session(total, set(conv.cars)))
            self.session_sent = True
            scheduled = total
        while self.weather_sent < len(conv.weather):
            out.append(conv.weather[self.weather_sent])
            self.weather_sent += 1
        while self.controls_sent < len(conv.controls):
            control = conv.controls[self.controls_sent]
            self.controls_sent += 1
            if scheduled and control.lap is not None and control.lap > scheduled:
                control = replace(control, lap=scheduled)
            out.append(control)
        if scheduled and self.flag_ms is None:
            finals = [p.lap.crossing_ms for p in conv.laps[self.next_pending:] if p.lap.lap == scheduled]
            if finals:  # the leader completed the distance (its lap may still wait for its time)
                self.flag_ms = min(finals)
                self.flag_due = True
        new_laps = self._new_laps()
        out.extend(self._laps(now, final))
        out.extend(self._verdicts(now, new_laps))
        if self.flag_due:
            out.append(chequered(self.race_id, self.flag_ms or 0, scheduled or 0))
            self.flag_due = False
        for number, car in sorted(conv.cars.items()):
            # timing marks the car retired after its last crossing, and its laps are out
            sent = self.crossings_sent.get(number, [])
            last = sent[-1].crossing_ms if sent else 0
            if car.retired_ms is not None and car.retired_ms > last and number not in self.retired_sent \
                    and self.flag_ms is None and not self._waiting(number):
                out.append(retirement(self.race_id, number, conv.code(number), car.retired_ms, len(sent)))
                self.retired_sent.add(number)
                self.done.add(number)
        return out

    def _verdicts(self, now: int, new_laps: set[int]) -> list[InputRecord]:
        """Race control deleted (reinstated) a lap that went out: a LAP_DELETED (LAP_REINSTATED)
        control says so, which the dataflow applies (best laps and the fastest lap again)."""
        conv = self.conv
        # a verdict changes with the messages and with the car's laps (it may name one to come)
        cars = {number for number, _lap, _time in conv.deleted | self.verdicts_seen}
        if conv.deleted == self.verdicts_seen:
            cars &= new_laps
        self.verdicts_seen = frozenset(conv.deleted)
        out: list[InputRecord] = []
        for number in sorted(cars):
            sent = self.crossings_sent.get(number, [])
            car_laps = self.car_laps.get(number, [])
            for lap in sent:
                deleted = conv.is_deleted(lap, car_laps)
                if deleted == self.sent_deleted.get((number, lap.lap)):
                    continue
                self.sent_deleted[(number, lap.lap)] = deleted
                kind = ControlKind.LAP_DELETED if deleted else ControlKind.LAP_REINSTATED
                word = "deleted" if deleted else "reinstated"
                out.append(Control(f"{self.race_id}:{word}:{number}:{lap.lap}", self.race_id, now, kind,
                                   f"{conv.code(number)} lap {lap.lap} {word}", driver_number=number, lap=lap.lap))
        return out

    def _new_laps(self) -> set[int]:
        """Keep each car's laps (the rules read them) up to date; the cars that have new ones."""
        new: set[int] = set()
        for p in self.conv.laps[self.laps_seen:]:
            self.car_laps.setdefault(p.lap.driver_number, []).append(p.lap)
            new.add(p.lap.driver_number)
        self.laps_seen = len(self.conv.laps)
        return new

    def _waiting(self, number: int) -> bool:
        """Laps of this car are known but not sent yet."""
        return self.conv.cars[number].laps > self.laps_sent.get(number, 0)

    def _laps(self, now: int, final: bool) -> list[InputRecord]:
        conv = self.conv
        out: list[InputRecord] = []
        blocked: set[int] = set()  # cars whose earliest unsent lap is not final: later ones wait
        pending = conv.laps
        i = self.next_pending
        keep_from: int | None = None
        while i < len(pending):
            p = pending[i]
            lap, number = p.lap, p.lap.driver_number
            i += 1
            if number in self.done or lap.lap <= self.laps_sent.get(number, 0):
                continue
            if number in blocked or not (final or self._final(p, now)):
                blocked.add(number)
                keep_from = i - 1 if keep_from is None else keep_from
                continue
            sent = self.crossings_sent.setdefault(number, [])
            prev = sent[-1].crossing_ms if sent else 0
            if self.flag_ms is not None and sent and sent[-1].crossing_ms >= self.flag_ms:
                self.done.add(number)  # took the flag on its previous lap
                continue
            conv.settle_lap(lap, prev, self.car_laps[number], p.estimated)
            out.append(replace(lap))  # a copy: what went out never changes
            sent.append(lap)
            self.laps_sent[number] = lap.lap
            self.sent_deleted[(number, lap.lap)] = lap.deleted
        self.next_pending = keep_from if keep_from is not None else len(pending)
        return out

    def _final(self, p: PendingLap, now: int) -> bool:
        lap = p.lap
        if lap.pit_in and lap.pit_lane_ms is None and self.conv.cars[lap.driver_number].in_pit:
            return False  # the in-lap goes with its time in the pit lane, once the car is out
        return p.time_from_feed or p.estimated or now - lap.crossing_ms > LAP_TIME_WAIT_MS


def convert_incrementally(messages: Iterable[FeedMessage], race_id: str) -> list[InputRecord]:
    """A whole capture through :class:`IncrementalConverter`: the records a live run would have
    produced, in the order it would have produced them. A capture that never shows the session
    start (an archive) starts with its first timing delta."""
    ordered = in_arrival_order(messages)
    inc = IncrementalConverter(race_id)
    out: list[InputRecord] = []
    for m in ordered:
        out.extend(inc.push(m))
    if inc.conv.t0 is None:
        inc = IncrementalConverter(race_id, start_on_timing=True)
        for m in ordered:
            out.extend(inc.push(m))
    out.extend(inc.finish())
    if inc.conv.estimated_laps:
        log.warning("race %s: %d laps had no crossing in the capture (it joined late or missed deltas); their "
                    "crossings are estimated", race_id, inc.conv.estimated_laps)
    return out


def recorded_race(messages: Iterable[FeedMessage], race_id: str) -> RecordedRace:
    """The whole session at once: the records a live run gives, with race control's later verdicts
    folded into the laps they name (``deleted``)."""
    records = convert_incrementally(messages, race_id)
    verdicts: dict[tuple[int, int], bool] = {}
    for r in records:
        if isinstance(r, Control) and r.kind in VERDICTS and r.driver_number is not None and r.lap is not None:
            verdicts[(r.driver_number, r.lap)] = r.kind is ControlKind.LAP_DELETED
    laps = [replace(r, deleted=verdicts.get((r.driver_number, r.lap), r.deleted))
            for r in records if isinstance(r, Lap)]
    laps.sort(key=lambda lap: (lap.crossing_ms, lap.driver_number))
    controls = [r for r in records if isinstance(r, Control) and r.kind not in VERDICTS]
    session = next(r for r in records if isinstance(r, Session))
    return RecordedRace(race_id, session, laps, controls, [r for r in records if isinstance(r, Weather)])




def convert(messages: Iterable[FeedMessage], race_id: str) -> RecordedRace:
    """Feed messages → a race's records, exactly as a live run sends them, race control's later
    verdicts folded into the laps (:func:`recorded_race`)."""
    return recorded_race(messages, race_id)


def load_capture(path: Path, race_id: str | None = None) -> RecordedRace:
    """A capture file or archive folder → the race's records (``racewire livetiming``)."""
    return convert(read_capture(path), race_id or capture_race_id(path))
