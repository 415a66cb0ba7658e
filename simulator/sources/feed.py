"""The official live-timing feed as it is spoken and recorded: what the live client
(:mod:`simulator.sources.live`) and the stand-in server (``racewire feed-server``) share.

The feed is a SignalR Core hub: ``POST {base}/signalrcore/negotiate`` (the load balancer sets a
cookie the WebSocket must present), a WebSocket to ``{base}/signalrcore?id=<token>``, the JSON hub
protocol (records end with ``0x1e``). The client invokes ``Subscribe`` with a list of topics; the
completion's result is the full current state of each topic; then every change comes as an
invocation of ``feed`` with ``[topic, data, timestamp]``.

A *recording* keeps what arrived, one message per line, ``<unix-ns>:<topic>:<json>``, stamped with
its arrival time; an ``init`` line is a subscription's snapshot (the first line, and again after each
reconnection, where it replaces the state of every topic it names). ``*.z`` payloads stay as sent
(base64 of raw-deflate JSON); readers decode them (:mod:`simulator.sources.livetiming`).

>>> line = recording_line(1_730_555_234_936_487_065, "LapCount", {"CurrentLap": 3})
>>> line
'1730555234936487065:LapCount:{"CurrentLap":3}'
>>> parse_raw_line(line)
(1730555234936487065, 'LapCount', {'CurrentLap': 3})
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

# (feed_time_ns, the service's timestamps, lives in livetiming so that the converter reads them too)
from simulator.sources.livetiming import LiveTimingError, merge
from simulator.sources.livetiming import feed_time_ns as feed_time_ns

HUB_PATH = "/signalrcore"
#: every topic racewire subscribes to
TOPICS = (
    "Heartbeat", "SessionInfo", "SessionStatus", "SessionData", "ExtrapolatedClock", "LapCount",
    "TrackStatus", "DriverList", "TimingData", "TimingAppData", "TimingStats", "TopThree",
    "RaceControlMessages", "WeatherData", "TeamRadio", "PitLaneTimeCollection", "PitStopSeries",
    "DriverRaceInfo", "CarData.z", "Position.z",
)  # fmt: skip
#: topics the service sends only to a client that presents an F1TV subscription token
TOKEN_TOPICS = frozenset({"CarData.z", "Position.z", "ChampionshipPrediction"})
INIT = "init"
"""The topic name of a snapshot line in a recording."""


def feed_timestamp(ns: int) -> str:
    """The ``feed`` invocation's timestamp argument (UTC, ISO 8601, ``Z``) of an instant.

    >>> feed_timestamp(1_730_555_234_936_487_065)
    '2024-11-02T13:47:14.936487Z'
    """
    return datetime.fromtimestamp(ns // 1000 / 1e6, UTC).isoformat().replace("+00:00", "Z")


def recording_line(ns: int, topic: str, data: Any) -> str:
    """One recording line (no newline); JSON without spaces, as the feed sends it."""
    return f"{ns}:{topic}:{json.dumps(data, separators=(',', ':'), ensure_ascii=False)}"


def parse_raw_line(line: str) -> tuple[int, str, Any]:
    """``(unix-ns, topic, payload)`` of a recording line, ``*.z`` payloads left encoded.
    Raises ``ValueError`` on a malformed line."""
    ns, topic, text = line.lstrip("\ufeff").rstrip("\r\n").split(":", 2)
    return int(ns), topic, json.loads(text)


@dataclass(slots=True)
class RawRecording:
    """A recording as sent: the first snapshot, then every delta in arrival order."""

    start_ns: int
    snapshot: dict[str, Any]
    deltas: list[tuple[int, str, Any]] = field(default_factory=list)

    @property
    def end_ns(self) -> int:
        return self.deltas[-1][0] if self.deltas else self.start_ns


def read_raw_recording(path: Path) -> RawRecording:
    """A recording file whose first line is a snapshot (or, in a recording made topic by topic,
    none: every line is then a delta); later snapshots (reconnections) are folded in as one delta
    per topic. Malformed lines raise :class:`LiveTimingError` naming the line."""
    recording: RawRecording | None = None
    with path.open(encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                ns, topic, data = parse_raw_line(line)
            except ValueError as exc:
                raise LiveTimingError(f"{path}:{number}: not a recording line ({exc})") from exc
            if recording is None:
                if topic == INIT and not isinstance(data, dict):
                    raise LiveTimingError(f"{path}:{number}: the '{INIT}' snapshot is not an object of topics")
                # a recording made topic by topic (each topic's full state first, marked _kf) has no
                # snapshot line: its state at any instant is made of the lines up to it
                recording = RawRecording(ns, data if topic == INIT else {})
                if topic != INIT:
                    recording.deltas.append((ns, topic, data))
            elif topic == INIT and isinstance(data, dict):
                recording.deltas.extend((ns, name, value) for name, value in data.items())
            else:
                recording.deltas.append((ns, topic, data))
    if recording is None:
        raise LiveTimingError(f"{path} is empty")
    return recording


class Playback:
    """A recording's state at any capture instant, for a server that plays it back.

    ``advance(ns)`` applies every delta stamped at or before ``ns`` and returns them; ``snapshot()``
    is the state of every topic after what was applied (a deep copy, safe to send while playback
    goes on).

    >>> rec = RawRecording(0, {"LapCount": {"CurrentLap": 1, "TotalLaps": 3}})
    >>> rec.deltas += [(10, "LapCount", {"CurrentLap": 2}), (20, "LapCount", {"CurrentLap": 3})]
    >>> p = Playback(rec)
    >>> [d[2] for d in p.advance(15)], p.snapshot()["LapCount"]
    ([{'CurrentLap': 2}], {'CurrentLap': 2, 'TotalLaps': 3})
    >>> p.index, p.finished
    (1, False)
    """

    def __init__(self, recording: RawRecording) -> None:
        self.recording = recording
        self.state: dict[str, Any] = json.loads(json.dumps(recording.snapshot))
        self.index = 0  # deltas applied

    @property
    def finished(self) -> bool:
        return self.index >= len(self.recording.deltas)

    def advance(self, ns: int) -> list[tuple[int, str, Any]]:
        deltas = self.recording.deltas
        start = self.index
        while self.index < len(deltas) and deltas[self.index][0] <= ns:
            _, topic, data = deltas[self.index]
            # a copy: merge() may keep parts of the delta in the state and patch them later
            self.state[topic] = merge(self.state.get(topic), json.loads(json.dumps(data)))
            self.index += 1
        return deltas[start:self.index]

    def snapshot(self, topics: Iterable[str] | None = None) -> dict[str, Any]:
        names = self.state.keys() if topics is None else [t for t in topics if t in self.state]
        return json.loads(json.dumps({t: self.state[t] for t in names}))


class RecordingWriter:
    """Appends arriving messages to a recording, flushed to the operating system at once and
    synced to disk at least every ``sync_every_s`` (a crash loses at most that much)."""

    def __init__(self, path: Path, sync_every_s: float = 1.0) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = path.open("a", encoding="utf-8")
        self.sync_every_ns = int(sync_every_s * 1e9)
        self._synced_ns = 0
        self.lines = 0

    def write(self, ns: int, topic: str, data: Any) -> None:
        self._fh.write(recording_line(ns, topic, data) + "\n")
        self._fh.flush()
        self.lines += 1
        if ns - self._synced_ns >= self.sync_every_ns:
            os.fsync(self._fh.fileno())
            self._synced_ns = ns

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
