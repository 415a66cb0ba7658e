"""Live-timing captures as a source: a raw capture of the official F1 live-timing feed → racewire
input. ``racewire livetiming`` runs it through the pipeline (:mod:`infra.pipeline_run`).

Two capture formats are read (see ``../shared/data/README.md``):

- a *recording*: one message per line, ``<unix-ns>:<topic>:<json>``; the first line (topic
  ``init``) is the full state of every topic, every later line a delta for one topic, stamped
  with its arrival time;
- an *archive* folder of ``<Topic>.jsonStream`` files (UTF-8 BOM), lines
  ``HH:MM:SS.mmm{json-delta}`` (offset from the stream start).

Deltas merge the way the SignalR feed defines them (:func:`merge`): objects merge recursively,
a list may be patched by an object keyed by index strings, ``_deleted`` removes keys or
indices, and compressed ``*.z`` topics (base64 of raw-deflate JSON) are decoded. Messages are
applied in arrival order; exact duplicates are dropped and every derived fact is monotonic
(a stale ``NumberOfLaps`` never takes a lap back), so duplicated and out-of-order deltas are
harmless.

:class:`FeedConverter` walks the evolving state and derives racewire records in session time
(ms after ``SessionStatus`` ``Started``, or the first message when the capture has no start):

- ``Lap`` when a car's ``NumberOfLaps`` increments: crossing = arrival of that delta, lap time
  from ``LastLapTime`` (``m:ss.mmm``; from crossing differences where the feed gives none,
  e.g. lap 1), sectors, ``pit_in`` on the lap during which ``InPit`` became true, ``pit_out`` on
  the lap during which the car left the pit lane, compound and tyre age from ``TimingAppData``
  stints, the most severe track status seen during the lap, ``deleted`` when race control
  deletes the lap time (a deletion that comes after the lap went out is a ``LAP_DELETED``
  verdict: :mod:`simulator.sources.incremental`, which decides when each record is final and
  is the one conversion, live or from a file);
- ``TRACK_STATUS`` controls on ``TrackStatus`` changes; race-control messages as ``MESSAGE``
  (or ``PENALTY``) controls; ``RETIREMENT`` when ``TimingData`` marks a car ``Retired`` (or
  ``Stopped`` and it never completes another lap), with ``lap`` = laps completed + 1;
  ``CHEQUERED_FLAG`` at the leader's crossing of the final lap (``LapCount.TotalLaps``, or the
  leader's laps when race control shows the flag, or the most laps any car completed);
- one ``Session`` (``DriverList``, total laps, grid from ``TimingAppData`` ``GridPos`` or the
  first ``TimingData`` positions).

Car telemetry (``CarData.z`` / ``Position.z``) is decoded and merged into the state but not yet
turned into ``Telemetry`` records (no recording here carries it; progress on the lap would need
a track outline): the dataflow orders cars from the timing line alone.

A capture that joins a session late (cars already on lap k) gets laps 1..k as catch-up records
with estimated crossings (spread between the start and the first message) and no lap time, so
the dataflow's lap sequence stays whole. Event ids depend only on facts (car, lap, message
index), so converting the same capture twice yields the same ids.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dataflows.race.qualifying import Phase, QualiLap
from schemas.model import Control, ControlKind, Driver, Lap, Session, SessionKind, TrackStatus, Weather
from simulator.sources.base import (
    default_race_id,
    lap_event_id,
    race_start,
    session_event_id,
)
from simulator.sources.laptables import most_severe

log = logging.getLogger("racewire.livetiming")

LAP_TIME_WAIT_MS = 10_000
"""A ``LastLapTime`` that arrives this long after the lap's ``NumberOfLaps`` still belongs to it."""
DUPLICATE_WINDOW_MS = 2_000
"""An identical message (topic and payload) within this long of another is a duplicate."""
CHEQUERED_LOOKBACK_MS = 30_000
"""The leader's crossing that race control's CHEQUERED FLAG refers to may precede it by this much."""

_ARCHIVE_LINE = re.compile(r"^(\d+):(\d{2}):(\d{2})(?:\.(\d{1,3}))?(.*)$", re.S)
_CAR = re.compile(r"\bCARS? (\d+)\b")
_DELETED = re.compile(r"\bCAR (\d+)\b.*?\bTIME (\S+) (DELETED|REINSTATED)\b.*?\bLAP (\d+)\b")
#: qualifying's form: "CAR 18 (STR) LAP DELETED - TRACK LIMITS AT TURN 13 LAP 3 15:04:13" (no time)
_LAP_DELETED = re.compile(r"\bCAR (\d+)\b.*?\bLAP (DELETED|REINSTATED)\b.*?\bLAP (\d+)\b")
_TIME = re.compile(r"^(?:(\d+):)?(\d+(?:\.\d+)?)$")


class LiveTimingError(ValueError):
    """The capture cannot be converted; the message says what was wrong."""


# ------------------------------------------------------------------------------ reading (pure)


@dataclass(slots=True)
class FeedMessage:
    """One feed message: arrival time (ms), topic, payload; ``full`` replaces the topic state."""

    ts_ms: int
    topic: str
    data: Any
    seq: int = 0
    full: bool = False


def decode_z(payload: str) -> Any:
    """A compressed ``*.z`` payload (base64 of raw-deflate JSON) → JSON value."""
    raw = zlib.decompress(base64.b64decode(payload), -zlib.MAX_WBITS)
    return json.loads(raw)


def _topic_payload(topic: str, data: Any) -> tuple[str, Any]:
    if topic.endswith(".z"):
        return topic[:-2], decode_z(data) if isinstance(data, str) else data
    return topic, data


def parse_recording(lines: Iterable[str]) -> list[FeedMessage]:
    """Messages of a recording (``<unix-ns>:<topic>:<json>`` lines); bad lines are skipped."""
    out: list[FeedMessage] = []
    bad = 0
    for line in lines:
        line = line.lstrip("\ufeff").strip()
        if not line:
            continue
        try:
            ns, topic, text = line.split(":", 2)
            ts = int(ns) // 1_000_000
            data = json.loads(text)
            if topic == "init":
                if not isinstance(data, dict):
                    raise ValueError("init is not an object")
                for name, value in data.items():
                    name, value = _topic_payload(name, value)
                    out.append(FeedMessage(ts, name, value, len(out), full=True))
            else:
                topic, data = _topic_payload(topic, data)
                out.append(FeedMessage(ts, topic, data, len(out)))
        except (ValueError, zlib.error) as exc:
            bad += 1
            if bad <= 3:
                log.warning("skipping a malformed line (%s): %.80s", exc, line)
    if bad:
        log.warning("skipped %d malformed lines", bad)
    return out


def parse_archive_lines(topic: str, lines: Iterable[str], seq_start: int = 0) -> list[FeedMessage]:
    """Messages of one archive ``<Topic>.jsonStream`` (``HH:MM:SS.mmm{json}`` lines)."""
    out: list[FeedMessage] = []
    for line in lines:
        line = line.lstrip("\ufeff").strip()
        m = _ARCHIVE_LINE.match(line)
        if not m:
            continue
        h, mi, s, frac, text = m.groups()
        ts = ((int(h) * 60 + int(mi)) * 60 + int(s)) * 1000 + int((frac or "0").ljust(3, "0"))
        try:
            name, data = _topic_payload(topic, json.loads(text))
        except (ValueError, zlib.error):
            continue
        out.append(FeedMessage(ts, name, data, seq_start + len(out)))
    return out


def read_capture(path: Path) -> list[FeedMessage]:
    """A recording file or an archive folder of ``*.jsonStream`` files → messages."""
    if path.is_dir():
        files = sorted(path.glob("*.jsonStream"))
        if not files:
            raise LiveTimingError(f"{path} has no *.jsonStream files")
        out: list[FeedMessage] = []
        for f in files:
            with f.open(encoding="utf-8-sig") as fh:
                out.extend(parse_archive_lines(f.name.removesuffix(".jsonStream"), fh, len(out)))
        return out
    with path.open(encoding="utf-8-sig") as fh:
        return parse_recording(fh)


def arrival_key(m: FeedMessage) -> tuple[int, bool, bool, int]:
    """The order messages apply in: by arrival; a full state (init) before the deltas of its
    instant, its SessionStatus last (a late capture's start needs the rest of that state:
    SessionData, TimingData)."""
    return (m.ts_ms, not m.full, m.full and m.topic == "SessionStatus", m.seq)


class Duplicates:
    """The duplicate rule, message by message: the same topic and payload again within
    :data:`DUPLICATE_WINDOW_MS` is dropped (a full state never is)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], int] = {}

    def fresh(self, m: FeedMessage) -> bool:
        key = (m.topic, json.dumps(m.data, sort_keys=True, separators=(",", ":")))
        last = self.seen.get(key)
        if last is not None and m.ts_ms - last <= DUPLICATE_WINDOW_MS and not m.full:
            return False
        self.seen[key] = m.ts_ms
        return True


def in_arrival_order(messages: Iterable[FeedMessage]) -> list[FeedMessage]:
    """Sorted by arrival (:func:`arrival_key`, stable), duplicates dropped (:class:`Duplicates`)."""
    duplicates = Duplicates()
    return [m for m in sorted(messages, key=arrival_key) if duplicates.fresh(m)]


# ------------------------------------------------------------------------------ merging (pure)


def merge(base: Any, delta: Any) -> Any:
    """Merge a feed delta into a state value; returns the new value (``base`` may be updated
    in place).

    >>> merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}})
    {'a': {'b': 1, 'c': 3}}
    >>> merge({"S": [{"V": "1"}, {"V": "2"}]}, {"S": {"1": {"V": "9"}}})
    {'S': [{'V': '1'}, {'V': '9'}]}
    >>> merge({"L": {"Lap": 3, "V": "1:00"}}, {"L": {"V": "", "_deleted": ["Lap"]}})
    {'L': {'V': ''}}
    """
    if isinstance(delta, dict):
        if isinstance(base, list):
            return _merge_list(base, delta)
        target: dict[str, Any] = base if isinstance(base, dict) else {}
        for key, value in delta.items():
            if key in ("_deleted", "_kf"):
                continue
            target[key] = merge(target.get(key), value)
        for key in delta.get("_deleted") or ():
            target.pop(str(key), None)
        return target
    if isinstance(delta, list):
        return [merge(None, v) for v in delta]
    return delta


def _merge_list(base: list[Any], delta: dict[str, Any]) -> list[Any]:
    for key, value in delta.items():
        if key in ("_deleted", "_kf"):
            continue
        try:
            i = int(key)
        except ValueError:
            continue
        if i < 0:
            continue
        while len(base) <= i:
            base.append(None)
        base[i] = merge(base[i], value)
    removed = sorted({int(k) for k in delta.get("_deleted") or () if str(k).isdigit()}, reverse=True)
    for i in removed:
        if i < len(base):
            del base[i]
    return base


def _items(value: Any) -> list[tuple[str, Any]]:
    """``(index, item)`` of a list or of an index-keyed object."""
    if isinstance(value, list):
        return [(str(i), v) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return sorted(((k, v) for k, v in value.items() if k.isdigit()), key=lambda kv: int(kv[0]))
    return []


def time_ms(text: Any) -> int | None:
    """``"1:12.366"`` / ``"16.449"`` → ms; ``""`` or junk → ``None``.

    >>> time_ms("1:12.366"), time_ms("16.449"), time_ms("")
    (72366, 16449, None)
    """
    if not isinstance(text, str):
        return None
    m = _TIME.match(text.strip())
    if not m:
        return None
    return round((int(m.group(1) or 0) * 60 + float(m.group(2))) * 1000)


def feed_time_ns(text: Any) -> int | None:
    """The instant (unix ns, to the microsecond) of a feed timestamp; ``None`` when it is not one.

    >>> feed_time_ns("2024-11-02T13:47:14.8693925Z"), feed_time_ns("soon")
    (1730555234869392000, None)
    """
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (int(moment.timestamp()) * 1_000_000 + moment.microsecond) * 1000


def clock_ms(text: Any) -> int | None:
    """``"01:02:03"`` (h:m:s, the session clock) → ms; junk → ``None``.

    >>> clock_ms("00:17:59"), clock_ms("1:00:00"), clock_ms("")
    (1079000, 3600000, None)
    """
    if not isinstance(text, str):
        return None
    parts = text.strip().split(":")
    try:
        h, m, sec = (int(parts[0]), int(parts[1]), float(parts[2])) if len(parts) == 3 else (0, 0, -1.0)
    except ValueError:
        return None
    return None if sec < 0 else round(((h * 60 + m) * 60 + sec) * 1000)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


# ------------------------------------------------------------------------------ converting (pure)


@dataclass(slots=True)
class _Car:
    number: int
    laps: int = 0
    crossings: list[int] = field(default_factory=list)
    in_pit: bool = False
    pit_in_lap: int | None = None  # the lap during which the car entered the pit lane
    pit_in_ms: int | None = None
    pit_out_lap: int | None = None  # the lap during which it left the pit lane
    retired_ms: int | None = None
    stopped_ms: int | None = None
    first_position: int | None = None


@dataclass(slots=True)
class PendingLap:
    lap: Lap
    time_from_feed: bool
    estimated: bool = False


class FeedConverter:
    """Feed messages (in arrival order) → racewire records of one race."""

    def __init__(self, race_id: str, start_on_timing: bool = False) -> None:
        self.race_id = race_id
        #: no ``Started`` in the capture: the race starts with the first timing delta
        self.start_on_timing = start_on_timing
        self.state: dict[str, Any] = {}
        self.t0: int | None = None
        self.first_ts: int | None = None
        self.last_ts = 0
        self.cars: dict[int, _Car] = {}
        self.laps: list[PendingLap] = []
        self.controls: list[Control] = []
        self.track: list[tuple[int, str]] = []  # (session ms, feed code) changes
        self.track_code = "1"
        self.lap_crossings: dict[int, int] = {}  # lap → latest crossing (keeps arrival order)
        self.rcm_seen: set[str] = set()
        self.radio_seen: set[str] = set()  # team-radio clip paths
        self.deleted: set[tuple[int, int, int | None]] = set()  # car, lap, time
        self.chequered_rcm_ms: int | None = None
        self.estimated_laps = 0
        #: a timing delta was applied after the start: a full state from now on is a snapshot taken
        #: again after a reconnection, whose changes are the gap's (laps, messages), not a catch-up
        self.following = False
        self.parts: list[Phase] = []  # qualifying parts seen so far
        self.clock_sent: tuple[int, bool] | None = None  # the last CLOCK control: (remaining, running)
        self.weather: list[Weather] = []  # every measurement since the start

    # -------------------------------------------------------------- feeding
    def feed_all(self, messages: Iterable[FeedMessage]) -> None:
        for m in messages:
            self.feed(m)

    def feed(self, m: FeedMessage) -> None:
        if self.first_ts is None:
            self.first_ts = m.ts_ms
        self.last_ts = max(self.last_ts, m.ts_ms)
        if m.full:
            self.state[m.topic] = merge(None, m.data)
        else:
            self.state[m.topic] = merge(self.state.get(m.topic), m.data)
        handler = getattr(self, f"_on_{m.topic}", None)
        if handler is not None:
            handler(m)

    def _session_ms(self, ts: int) -> int:
        return max(0, ts - (self.t0 if self.t0 is not None else ts))

    def _start(self, ts: int) -> None:
        if self.t0 is not None:
            return
        self.t0 = ts
        self.controls.append(race_start(self.race_id, "Session starts") if self.session_kind.timed
                             else race_start(self.race_id))
        self.track.append((0, self.track_code))
        if self.track_code not in ("1", ""):
            self._track_control(0, self.track_code)
        # a capture that joins late: cars already have laps
        for car in self.cars.values():
            if car.laps:
                self._catch_up(car, ts)
        self._clock(ts)
        self._weather(ts)

    def _on_SessionStatus(self, m: FeedMessage) -> None:
        status = str(self.state.get("SessionStatus", {}).get("Status", ""))
        if status == "Started" and self.t0 is None:
            self._start(self._late_start_ts(m) if m.full else m.ts_ms)
        # the parts of a qualifying session: each from its start to its flag
        if status == "Started" and self.t0 is not None and (not self.parts or self.parts[-1].end_ms is not None):
            at = self._late_start_ts(m) if m.full else m.ts_ms
            self.parts.append(Phase(self._part_number(), self._session_ms(at)))
            self._part_control(ControlKind.PART_START, self.parts[-1].number, self.parts[-1].start_ms)
        elif status in ("Finished", "Finalised", "Ends") and self.parts and self.parts[-1].end_ms is None:
            self.parts[-1] = Phase(self.parts[-1].number, self.parts[-1].start_ms, self._session_ms(m.ts_ms))
            self._part_control(ControlKind.PART_END, self.parts[-1].number, self.parts[-1].end_ms or 0)

    def _part_control(self, kind: ControlKind, part: int, t: int) -> None:
        """A qualifying part started or its flag fell (only a knock-out session has parts)."""
        if not self.session_kind.knockout:
            return
        what = "starts" if kind is ControlKind.PART_START else "ends"
        self.controls.append(Control(f"{self.race_id}:part:{part}:{kind.lower()}", self.race_id, t, kind,
                                     f"{self.session_kind.part_name(part)} {what}", part=part))

    def _on_WeatherData(self, m: FeedMessage) -> None:
        if self.t0 is not None:
            self._weather(m.ts_ms)

    def _weather(self, ts: int) -> None:
        """The weather as it stands (``WeatherData``: strings of numbers; ``Rainfall`` "0"/"1")."""
        doc = self.state.get("WeatherData")
        if not isinstance(doc, dict):
            return

        def number(key: str) -> float | None:
            try:
                return float(doc[key])
            except (KeyError, TypeError, ValueError):
                return None

        direction = number("WindDirection")
        t = self._session_ms(ts)
        w = Weather(f"{self.race_id}:weather:{t}", self.race_id, t, number("AirTemp"), number("TrackTemp"),
                    number("Humidity"), number("Pressure"), number("WindSpeed"),
                    None if direction is None else round(direction) % 360,
                    str(doc.get("Rainfall")).lower() in ("1", "true"))
        last = self.weather[-1] if self.weather else None
        if last is not None and (last.ts_ms == t or replace(last, event_id=w.event_id, ts_ms=t) == w):
            return  # the same instant, or nothing changed (a snapshot taken again after a reconnection)
        self.weather.append(w)

    def _on_ExtrapolatedClock(self, m: FeedMessage) -> None:
        if self.t0 is not None:
            self._clock(m.ts_ms)

    def _clock(self, ts: int) -> None:
        """The session clock as a CLOCK control: time left at the instant the feed gives (its
        ``Utc``, when it agrees with the arrival clock), running down or stopped."""
        doc = self.state.get("ExtrapolatedClock")
        if not isinstance(doc, dict):
            return
        remaining = clock_ms(doc.get("Remaining"))
        if remaining is None:
            return
        running = _truthy(doc.get("Extrapolating"))
        if self.clock_sent == (remaining, running):
            return
        self.clock_sent = (remaining, running)
        utc = feed_time_ns(doc.get("Utc"))
        at = utc // 1_000_000 if utc is not None and abs(utc // 1_000_000 - ts) < 60_000 else ts
        t = self._session_ms(at)
        self.controls.append(Control(
            f"{self.race_id}:clock:{t}:{remaining}", self.race_id, t, ControlKind.CLOCK,
            f"Clock {remaining // 60_000}:{remaining // 1000 % 60:02d} {'running' if running else 'stopped'}",
            remaining_ms=remaining, clock_running=running))

    def _part_number(self) -> int:
        """The qualifying part now running (``SessionData.Series``), else the count of starts."""
        series = self.state.get("SessionData", {}).get("Series")
        parts = [_int(item.get("QualifyingPart")) for _i, item in _items(series) if isinstance(item, dict)]
        known = [p for p in parts if p]
        return known[-1] if known else len(self.parts) + 1

    def _late_start_ts(self, m: FeedMessage) -> int:
        """When the capture joins a started session: its start from ``SessionData`` (UTC, which
        recordings share with arrival times), else this message."""
        series = self.state.get("SessionData", {}).get("StatusSeries")
        for _i, item in _items(series):
            if isinstance(item, dict) and item.get("SessionStatus") == "Started" and item.get("Utc"):
                try:
                    utc = datetime.fromisoformat(str(item["Utc"]).replace("Z", "+00:00"))
                except ValueError:
                    continue
                ms = int(utc.timestamp() * 1000)
                if 0 < m.ts_ms - ms < 6 * 3_600_000:
                    return ms
        return m.ts_ms

    def _on_TrackStatus(self, m: FeedMessage) -> None:
        code = str(self.state.get("TrackStatus", {}).get("Status", "") or "")
        if not code or code == self.track_code:
            return
        self.track_code = code
        if self.t0 is None:
            return
        t = self._session_ms(m.ts_ms)
        self.track.append((t, code))
        self._track_control(t, code)

    def _track_control(self, t: int, code: str) -> None:
        try:
            status = TrackStatus.from_feed_code(code)
        except (KeyError, ValueError):
            return
        lap = self._leader_lap()
        text = f"Track status {status}" if self.session_kind.timed else f"Track status {status} on lap {lap}"
        self.controls.append(Control(f"{self.race_id}:track:{t}:{status}", self.race_id, t,
                                     ControlKind.TRACK_STATUS, text, track_status=status, lap=lap))

    def _leader_lap(self) -> int:
        return max((c.laps for c in self.cars.values()), default=0) + 1

    def _on_LapCount(self, m: FeedMessage) -> None:
        pass  # read at the end (TotalLaps)

    def _on_RaceControlMessages(self, m: FeedMessage) -> None:
        messages = self.state.get("RaceControlMessages", {}).get("Messages")
        for index, msg in _items(messages):
            if index in self.rcm_seen or not isinstance(msg, dict):
                continue
            self.rcm_seen.add(index)
            if self.t0 is None or (m.full and not self.following):
                continue  # before the start: not part of the race
            self._race_control(index, msg, self._session_ms(m.ts_ms))

    def _on_TeamRadio(self, m: FeedMessage) -> None:
        """Each clip once: who, and when (the capture's ``Utc`` when it agrees with the arrival clock)."""
        for _i, clip in _items(self.state.get("TeamRadio", {}).get("Captures")):
            path = clip.get("Path") if isinstance(clip, dict) else None
            number = _int(clip.get("RacingNumber")) if isinstance(clip, dict) else None
            if not path or number is None or path in self.radio_seen:
                continue
            self.radio_seen.add(str(path))
            if self.t0 is None or (m.full and not self.following) or number not in self.cars:
                continue  # before the start, or from before a late join
            utc = feed_time_ns(clip.get("Utc"))
            at = utc // 1_000_000 if utc is not None and 0 <= m.ts_ms - utc // 1_000_000 < 600_000 else m.ts_ms
            t = self._session_ms(at)
            self.controls.append(Control(f"{self.race_id}:radio:{path}", self.race_id, t, ControlKind.TEAM_RADIO,
                                         f"Team radio: {self.code(number)}", driver_number=number,
                                         lap=self.cars[number].laps + 1, clip_path=str(path)))

    def _race_control(self, index: str, msg: dict[str, Any], t: int) -> None:
        text = str(msg.get("Message", ""))
        upper = text.upper()
        deleted = _DELETED.search(upper)
        lap_deleted = _LAP_DELETED.search(upper)
        key: tuple[int, int, int | None] | None = None
        if deleted:
            key, verdict = (int(deleted.group(1)), int(deleted.group(4)), time_ms(deleted.group(2))), deleted.group(3)
        elif lap_deleted:
            key, verdict = (int(lap_deleted.group(1)), int(lap_deleted.group(3)), None), lap_deleted.group(2)
        if key is not None:
            if verdict == "DELETED":
                self.deleted.add(key)
            else:
                self.deleted.discard(key)
        if str(msg.get("Flag", "")).upper() == "CHEQUERED" and self.chequered_rcm_ms is None:
            self.chequered_rcm_ms = t
        car = _CAR.search(upper)
        number = int(car.group(1)) if car else None
        if number is not None and number not in self.cars:
            number = None
        kind = ControlKind.PENALTY if "PENALTY" in upper and "NO PENALTY" not in upper else ControlKind.MESSAGE
        lap = _int(msg.get("Lap"))
        self.controls.append(Control(f"{self.race_id}:rcm:{index}", self.race_id, t, kind, text,
                                     driver_number=number, lap=lap if lap and lap > 0 else None))

    def _on_TimingData(self, m: FeedMessage) -> None:
        lines = m.data.get("Lines") if isinstance(m.data, dict) else None
        if not isinstance(lines, dict):
            return
        if self.t0 is None and self.start_on_timing and not m.full:
            self._start(m.ts_ms)
        state_lines = self.state.get("TimingData", {}).get("Lines", {})
        # cars completing a lap in one (batched) message cross in the order of their positions
        for key, delta in sorted(lines.items(), key=lambda kv: self._position(state_lines, kv[0], kv[1])):
            number = _int(key)
            line = state_lines.get(key)
            if number is None or number <= 0 or not isinstance(delta, dict) or not isinstance(line, dict):
                continue
            car = self.cars.get(number)
            if car is None:
                car = self.cars[number] = _Car(number)
            if car.first_position is None and _int(line.get("Position")):
                car.first_position = _int(line.get("Position"))
            self._timing_line(car, line, delta, m)

    @staticmethod
    def _position(state_lines: dict[str, Any], key: str, delta: Any) -> int:
        if not isinstance(delta, dict) or "NumberOfLaps" not in delta:
            return 0
        line = state_lines.get(key)
        return (_int(line.get("Position")) or 999) if isinstance(line, dict) else 999

    def _timing_line(self, car: _Car, line: dict[str, Any], delta: dict[str, Any], m: FeedMessage) -> None:
        laps = _int(line.get("NumberOfLaps")) or 0
        if self.t0 is not None and not m.full:
            self.following = True
        if self.t0 is None or (m.full and not self.following):
            car.laps = max(car.laps, laps)  # a late capture's laps so far (caught up at the start)
            car.in_pit = _truthy(line.get("InPit"))
            if self.t0 is not None and car.laps and not car.crossings:
                self._catch_up(car, m.ts_ms)
            return
        t = self._session_ms(m.ts_ms)
        in_pit = _truthy(line.get("InPit"))
        # a snapshot after a reconnection: a car that was in the pit lane and is out now crossed
        # the line in the pit lane first (a stop is shorter than a lap), so its exit comes after
        # the laps of the gap
        pit_exit_after_laps = m.full and car.in_pit and not in_pit
        if "InPit" in delta and in_pit != car.in_pit and not pit_exit_after_laps:
            if in_pit:
                car.pit_in_lap, car.pit_in_ms = car.laps + 1, t
            else:
                car.pit_out_lap = car.laps + 1
                self._pit_lane(car, t)
            car.in_pit = in_pit
        if not m.full and _truthy(delta.get("PitOut")) and car.pit_out_lap != car.laps + 1 \
                and car.pit_in_ms is not None:
            car.pit_out_lap = car.laps + 1
        if "NumberOfLaps" in delta and laps > car.laps:
            prev, missing = (car.crossings[-1] if car.crossings else 0), laps - 1 - car.laps
            # the laps of a gap were run on the tyres fitted before a pit exit in the gap
            stint = -2 if pit_exit_after_laps else -1
            for i in range(1, missing + 1):  # missed increments: laps between, spread, without a time
                self._lap(car, prev + (t - prev) * i // (missing + 1), None, {}, estimated=True, stint=stint)
            last = delta.get("LastLapTime")
            lap_time = time_ms(last.get("Value")) if isinstance(last, dict) else None
            self._lap(car, t, lap_time, line, stint=stint)
            if missing and m.full:
                self._best_lap_time(car, line)
        if pit_exit_after_laps:
            car.pit_out_lap = car.laps + 1
            self._pit_lane(car, t)
            car.in_pit = False
        elif isinstance(delta.get("LastLapTime"), dict) and "Value" in delta["LastLapTime"]:
            self._late_lap_time(car, t, time_ms(delta["LastLapTime"]["Value"]))
        if _truthy(delta.get("Retired")) and car.retired_ms is None:
            car.retired_ms = t
        if _truthy(delta.get("Stopped")) and car.stopped_ms is None:
            car.stopped_ms = t
        elif "Stopped" in delta and not _truthy(delta.get("Stopped")):
            car.stopped_ms = None

    def _pit_lane(self, car: _Car, t: int) -> None:
        if car.pit_in_ms is None or car.pit_in_lap is None:
            return
        for p in reversed(self.laps):
            if p.lap.driver_number == car.number and p.lap.lap == car.pit_in_lap and p.lap.pit_in:
                p.lap.pit_lane_ms = t - car.pit_in_ms
                break

    def _lap(self, car: _Car, t: int, lap_time: int | None, line: dict[str, Any], estimated: bool = False,
             stint: int = -1) -> None:
        n = car.laps + 1
        crossing = max(t, self.lap_crossings.get(n, -1) + 1, (car.crossings[-1] + 1) if car.crossings else 0)
        self.lap_crossings[n] = crossing
        sectors = [time_ms(s.get("Value")) if isinstance(s, dict) else None
                   for _i, s in _items(line.get("Sectors"))][:3]
        sectors += [None] * (3 - len(sectors))
        compound, tyre_age = self._tyres(car.number, stint)
        lap = Lap(
            event_id=lap_event_id(self.race_id, car.number, n), race_id=self.race_id,
            driver_number=car.number, lap=n, crossing_ms=crossing, lap_time_ms=lap_time,
            sector1_ms=sectors[0], sector2_ms=sectors[1], sector3_ms=sectors[2],
            pit_in=car.pit_in_lap == n, pit_out=car.pit_out_lap == n and n > 1,
            compound=compound, tyre_age=tyre_age)
        if estimated:
            lap.lap_time_ms = None
            lap.sector1_ms = lap.sector2_ms = lap.sector3_ms = None
            self.estimated_laps += 1
        self.laps.append(PendingLap(lap, lap_time is not None, estimated))
        car.laps = n
        car.crossings.append(crossing)

    def _best_lap_time(self, car: _Car, line: dict[str, Any]) -> None:
        """Laps a car completed while the connection was down have no time of their own; the
        snapshot's ``BestLapTime`` (value and lap) gives one of them back."""
        best = line.get("BestLapTime")
        lap_no = _int(best.get("Lap")) if isinstance(best, dict) else None
        lap_time = time_ms(best.get("Value")) if isinstance(best, dict) else None
        if lap_no is None or lap_time is None:
            return
        for p in reversed(self.laps):
            if p.lap.driver_number == car.number and p.lap.lap == lap_no:
                if p.lap.lap_time_ms is None:
                    p.lap.lap_time_ms, p.time_from_feed = lap_time, True
                return

    def _late_lap_time(self, car: _Car, t: int, lap_time: int | None) -> None:
        """A ``LastLapTime`` that came in a later delta than its ``NumberOfLaps``."""
        if lap_time is None or not car.crossings or t - car.crossings[-1] > LAP_TIME_WAIT_MS:
            return
        for p in reversed(self.laps):
            if p.lap.driver_number == car.number:
                if p.lap.lap == car.laps and not p.time_from_feed:
                    p.lap.lap_time_ms, p.time_from_feed = lap_time, True
                return

    def _catch_up(self, car: _Car, ts: int) -> None:
        """Laps 1..k of a car already on lap k+1 when the capture starts, with crossings spread
        between the start and the first message (ordered by the car's position)."""
        k, car.laps = car.laps, 0
        span = max(self._session_ms(self.first_ts or ts), k + 1)
        offset = (car.first_position or 99)
        for i in range(1, k + 1):
            self._lap(car, span * i // (k + 1) + offset, None, {}, estimated=True)

    def _tyres(self, number: int, stint_index: int = -1) -> tuple[str | None, int | None]:
        line = self.state.get("TimingAppData", {}).get("Lines", {}).get(str(number))
        stints = _items(line.get("Stints")) if isinstance(line, dict) else []
        if not stints:
            return None, None
        if len(stints) < -stint_index:
            return None, None
        stint = stints[stint_index][1]
        if not isinstance(stint, dict):
            return None, None
        compound = str(stint.get("Compound") or "").upper() or None
        if compound in ("UNKNOWN", "TEST_UNKNOWN"):
            compound = None
        return compound, _int(stint.get("TotalLaps"))

    # -------------------------------------------------------------- result
    def total_laps(self) -> int:
        """The race distance: ``LapCount.TotalLaps`` when the leader completed it, else the
        leader's laps when race control showed the flag, else the most laps completed."""
        most = max((c.laps for c in self.cars.values()), default=0)
        scheduled = _int(self.state.get("LapCount", {}).get("TotalLaps"))
        if scheduled and scheduled <= most:
            return scheduled
        if self.chequered_rcm_ms is not None:
            at_flag = [c.crossings for c in self.cars.values() if c.crossings]
            laps = max((sum(1 for x in cr if x <= self.chequered_rcm_ms + CHEQUERED_LOOKBACK_MS)
                        for cr in at_flag), default=0)
            if laps:
                return laps
        return most

    @property
    def session_kind(self) -> SessionKind:
        """The kind of session from ``SessionInfo``: its ``Type`` (Race, Qualifying, Practice) and
        ``Name`` ("Sprint", "Sprint Qualifying", "Sprint Shootout")."""
        info = self.state.get("SessionInfo", {})
        kind = str(info.get("Type") or "Race").lower()
        name = str(info.get("Name") or "").lower()
        sprint = "sprint" in name
        if kind == "qualifying":
            return SessionKind.SPRINT_QUALIFYING if sprint else SessionKind.QUALIFYING
        if kind == "practice":
            return SessionKind.PRACTICE
        return SessionKind.SPRINT if sprint else SessionKind.RACE

    @property
    def session_type(self) -> str:
        """``SessionInfo.Type``: Race, Qualifying, Practice (a sprint is a Race, its shootout Qualifying)."""
        return str(self.state.get("SessionInfo", {}).get("Type") or "Race")

    def qualifying_laps(self) -> list[QualiLap]:
        """Every lap so far with the time the feed gave it (no time derived from crossings: out-laps
        and in-laps have none that counts) and whether race control deleted it."""
        by_car: dict[int, list[Lap]] = {}
        for p in self.laps:
            by_car.setdefault(p.lap.driver_number, []).append(p.lap)
        return [QualiLap(lap.driver_number, lap.lap, lap.crossing_ms, lap.lap_time_ms,
                         self.is_deleted(lap, car_laps))
                for car_laps in by_car.values() for lap in car_laps]

    def settle_lap(self, lap: Lap, prev_crossing: int, car_laps: list[Lap], estimated: bool) -> None:
        """What a lap's record says once it is final: a time from the crossings where the feed gave
        none (not for an estimated lap, nor in qualifying or practice), deleted by race control,
        the most severe track status since the car's previous crossing."""
        if lap.lap_time_ms is None and not estimated and not self.session_kind.timed:
            # (in a session ordered by best lap only the feed's times count: an out-lap has none)
            lap.lap_time_ms = lap.crossing_ms - prev_crossing if prev_crossing or lap.lap == 1 else None
        if lap.lap_time_ms is not None and lap.lap_time_ms <= 0:
            lap.lap_time_ms = None
        lap.deleted = self.is_deleted(lap, car_laps)
        lap.track_status = self._status_between(prev_crossing, lap.crossing_ms)

    def is_deleted(self, lap: Lap, car_laps: list[Lap]) -> bool:
        """Race control deleted this lap time: matched by car and time (the message's lap number
        when no lap of the car has that time, or when several have it and that lap is one of them).
        A message naming a lap the car has not completed yet matches nothing until it has."""
        for number, lap_no, time in self.deleted:
            if number != lap.driver_number or (car_laps and lap_no > car_laps[-1].lap):
                continue
            same_time = [x.lap for x in car_laps if time is not None and x.lap_time_ms == time]
            if len(same_time) > 1 and lap_no in same_time:
                same_time = [lap_no]
            if (same_time and lap.lap in same_time) or (not same_time and lap.lap == lap_no):
                return True
        return False

    def _status_between(self, start: int, end: int) -> TrackStatus:
        codes = ""
        current = "1"
        for t, code in self.track:
            if t <= start:
                current = code
            elif t <= end:
                codes += code
        return most_severe(current + codes)

    def code(self, number: int) -> str:
        d = self.state.get("DriverList", {}).get(str(number))
        return str(d.get("Tla") or number) if isinstance(d, dict) else str(number)

    def session(self, total: int, racing: set[int]) -> Session:
        info = self.state.get("SessionInfo", {})
        meeting = info.get("Meeting", {}) if isinstance(info.get("Meeting"), dict) else {}
        drivers_doc = self.state.get("DriverList", {})
        numbers = sorted(n for n in self.cars if n in racing or self.cars[n].laps or n in
                         {_int(k) for k in drivers_doc})
        numbers = [n for n in numbers if n in self.cars]
        app = self.state.get("TimingAppData", {}).get("Lines", {})

        def grid_key(n: int) -> tuple[int, int]:
            line = app.get(str(n)) if isinstance(app, dict) else None
            pos = _int(line.get("GridPos")) if isinstance(line, dict) else None
            if pos:
                return (pos, n)
            return (100 + (self.cars[n].first_position or 99), n)

        grid = sorted(numbers, key=grid_key)
        drivers = []
        for n in grid:
            d = drivers_doc.get(str(n)) if isinstance(drivers_doc, dict) else None
            d = d if isinstance(d, dict) else {}
            first, last = str(d.get("FirstName") or ""), str(d.get("LastName") or "")
            name = f"{first} {last}".strip() or str(d.get("FullName") or d.get("Tla") or n)
            colour = str(d.get("TeamColour") or "888888").lstrip("#")
            drivers.append(Driver(number=n, code=self.code(n), name=name, team=str(d.get("TeamName") or ""),
                                  team_colour=colour if re.fullmatch(r"[0-9A-Fa-f]{6}", colour) else "888888"))
        title = " ".join(x for x in (str(meeting.get("Name") or ""), str(info.get("Name") or "")) if x)
        circuit = meeting.get("Circuit", {}) if isinstance(meeting.get("Circuit"), dict) else {}
        return Session(event_id=session_event_id(self.race_id), race_id=self.race_id, name=title or "Live timing",
                       circuit=str(circuit.get("ShortName") or title or ""), total_laps=max(total, 1),
                       track_length_m=0, start_time=self.start_time(), drivers=drivers, grid=grid,
                       source="livetiming", session_type=self.session_kind)

    def start_time(self) -> datetime:
        """Wall-clock start: the recording's arrival clock (unix), else ``SessionInfo``."""
        if self.t0 is not None and self.t0 > 946_684_800_000:  # a unix clock (after 2000)
            return datetime.fromtimestamp(self.t0 / 1000, UTC)
        info = self.state.get("SessionInfo", {})
        try:
            start = datetime.fromisoformat(str(info.get("StartDate")))
            sign = -1 if str(info.get("GmtOffset", "")).startswith("-") else 1
            h, m, *_ = (int(x) for x in str(info.get("GmtOffset", "0:0")).lstrip("+-").split(":"))
            return (start - sign * timedelta(hours=h, minutes=m)).replace(tzinfo=UTC)
        except (ValueError, TypeError):
            return datetime(1970, 1, 1, tzinfo=UTC)


def capture_race_id(path: Path) -> str:
    """``livetiming-<name>`` from the capture's file or folder name."""
    return default_race_id("livetiming", path.stem)


# ------------------------------------------------------------------------------ command line


def add_arguments(parser: Any) -> None:
    """``racewire livetiming PATH [--race-id ID]`` (the pipeline's own options are added by
    :mod:`infra.pipeline_run`)."""
    parser.add_argument("path", type=Path, help="recording (.txt) or archive folder of *.jsonStream files")
    parser.add_argument("--race-id", help="race id (default derived from the path)")
