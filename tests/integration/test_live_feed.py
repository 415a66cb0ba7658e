"""``racewire live`` against ``racewire feed-server`` (issue 13): the real commands over a real
socket speaking the live-timing service's protocol (negotiate with its cookie, WebSocket, JSON hub
protocol, Subscribe, feed invocations), playing captures faster than real time."""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.services import free_port
from simulator.sources.feed import INIT, parse_raw_line, recording_line
from simulator.sources.incremental import load_capture

REPO = Path(__file__).resolve().parents[2]
SPEED = 100


def _wait_port(port: int, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "feed-server exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"feed-server did not listen on {port} in {timeout} s")


def _racewire(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "infra.cli", *args], cwd=REPO, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def feed_server() -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def start(capture: Path, *options: str) -> int:
        port = free_port()
        proc = _racewire("feed-server", str(capture), "--port", str(port), *options)
        procs.append(proc)
        _wait_port(port, proc)
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def _live(port: int, record: Path, timeout: float, env: dict[str, str] | None = None, produce: bool = False,
          race_id: str | None = None, extra: tuple[str, ...] = ()) -> str:
    """``racewire live --until-finished`` against the server on ``port``; its output."""
    options = ([] if produce else ["--no-produce"]) + (["--race-id", race_id] if race_id else []) + list(extra)
    proc = _racewire("live", "--url", f"http://127.0.0.1:{port}", "--record", str(record), "--until-finished",
                     *options, env=env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"racewire live did not finish in {timeout} s:\n{out[-3000:]}") from None
    assert proc.returncode == 0, out[-3000:]
    return out


def _lines(path: Path) -> list[tuple[int, str, Any]]:
    with path.open(encoding="utf-8-sig") as fh:
        return [parse_raw_line(line) for line in fh if line.strip()]


def _result(path: Path) -> dict[str, Any]:
    """What the session's result is made of: every lap's id, the order at the line on each lap,
    the classification (laps, then crossing order) and the fastest lap."""
    race = load_capture(path, race_id="live-test")
    chart: dict[int, list[int]] = {}
    for lap in sorted(race.laps, key=lambda lap: (lap.crossing_ms, lap.driver_number)):
        chart.setdefault(lap.lap, []).append(lap.driver_number)
    last = {lap.driver_number: (lap.lap, -lap.crossing_ms) for lap in race.laps}
    timed = [lap for lap in race.laps if lap.lap_time_ms and not lap.deleted]
    fastest = min(timed, key=lambda lap: (lap.lap_time_ms, lap.crossing_ms))
    return {"laps": sorted(lap.event_id for lap in race.laps), "chart": chart,
            "classification": sorted(last, key=lambda n: last[n], reverse=True),
            "fastest": (fastest.driver_number, fastest.lap, fastest.lap_time_ms)}


@pytest.mark.acceptance
def test_live_records_the_session_as_the_service_sends_it(shared_data: Path, feed_server: Any, tmp_path: Path) -> None:
    capture = shared_data / "livetiming" / "recordings" / "2024_brazil_sprint.txt"
    port = feed_server(capture, "--speed", str(SPEED))
    record = tmp_path / "live.txt"
    _live(port, record, timeout=120)

    sent, got = _lines(capture), _lines(record)
    assert got[0][1] == INIT and sorted(got[0][2]) == sorted(sent[0][2])
    assert [t for _, t, _ in got].count(INIT) == 1  # no reconnection
    # every delta, in order, with its payload as sent, at least up to the one that made the session final
    final = next(i for i, (_, topic, data) in enumerate(sent)
                 if topic == "SessionStatus" and data.get("Status") == "Finalised")
    assert len(got) > final
    assert [(t, d) for _, t, d in got[1:]] == [(t, d) for _, t, d in sent[1:len(got)]]
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(got))  # arrival stamps never go back
    # the same session result as the capture (the playback is 100x faster: the order, not the clock)
    assert _result(record) == _result(capture)


def test_a_qualifying_recorded_topic_by_topic_is_followed_with_its_own_clock(
        shared_data: Path, feed_server: Any, tmp_path: Path) -> None:
    """The 2025 Dutch qualifying capture was recorded topic by topic (no snapshot line): played at
    200x and followed live, its recording keeps the service's clock (the stamps move with the
    session; the snapshot's Heartbeat gives the clock before any delta), and the recording read back
    is the session: three parts and the official order with PIA on pole."""
    from dataflows.race.qualifying import classification, standings
    from simulator.sources.livetiming import FeedConverter, read_capture

    capture = shared_data / "livetiming" / "recordings" / "2025_dutch_qualifying.txt"
    record = tmp_path / "live.txt"
    _live(feed_server(capture, "--speed", "200"), record, timeout=120)
    got = _lines(record)
    assert got[0][1] == INIT and "Heartbeat" in got[0][2]
    span_s = (got[-1][0] - got[0][0]) / 1e9
    assert span_s > 3000, f"the recording spans {span_s:.0f} s of the session's clock"  # ~78 min
    conv = FeedConverter("q")
    conv.feed_all(read_capture(record))
    assert [p.number for p in conv.parts] == [1, 2, 3]
    table = standings(conv.qualifying_laps(), conv.parts, sorted(conv.cars))
    order = [conv.code(s.driver) for s in classification(table)]
    assert order[:4] == ["PIA", "NOR", "VER", "HAD"] and order[-1] == "STR"


def _z(value: Any) -> str:
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return base64.b64encode(raw.compress(json.dumps(value).encode()) + raw.flush()).decode()


def test_car_data_is_sent_only_to_a_client_with_a_token(feed_server: Any, tmp_path: Path) -> None:
    t0 = 1_730_555_232_000_000_000
    capture = tmp_path / "capture.txt"
    position = {"Position": [{"Timestamp": "2024-11-02T14:00:00Z", "Entries": {"1": {"X": 1, "Y": 2, "Z": 0}}}]}
    lines = [recording_line(t0, INIT, {"SessionStatus": {"Status": "Started"}, "Position.z": _z(position),
                                       "LapCount": {"CurrentLap": 1, "TotalLaps": 2}})]
    lines += [recording_line(t0 + i * 100_000_000, "Position.z", _z(position)) for i in range(1, 6)]
    lines += [recording_line(t0 + 700_000_000, "SessionStatus", {"Status": "Finalised"})]
    capture.write_text("\n".join(lines) + "\n")
    options = ("--withhold-z", "--token", "secret-jwt")

    without = tmp_path / "without.txt"
    _live(feed_server(capture, *options), without, timeout=30, env={"RACEWIRE_F1TV_TOKEN": ""})
    got = _lines(without)
    assert "Position.z" not in got[0][2] and [t for _, t, _ in got[1:]] == ["SessionStatus"]

    with_token = tmp_path / "with.txt"
    _live(feed_server(capture, *options), with_token, timeout=30, env={"RACEWIRE_F1TV_TOKEN": "secret-jwt"})
    got = _lines(with_token)
    assert "Position.z" in got[0][2]
    assert [t for _, t, _ in got[1:]] == ["Position.z"] * 5 + ["SessionStatus"]
