"""The stand-in server's playback clock and what it notes for benchmarks (the protocol itself is
tested against the live client in tests/integration/test_live_feed.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from infra.feed_server import Connection, FeedServer, Options
from simulator.sources.feed import RawRecording


def _recording() -> RawRecording:
    rec = RawRecording(0, {"LapCount": {"CurrentLap": 1}, "TimingData": {"Lines": {"1": {"NumberOfLaps": 0}}}})
    rec.deltas += [(10 * 10**9, "TimingData", {"Lines": {"1": {"NumberOfLaps": 1}}}),
                   (20 * 10**9, "TimingData", {"Lines": {"1": {"NumberOfLaps": 2}, "4": {"Gap": "+1"}}}),
                   (30 * 10**9, "LapCount", {"CurrentLap": 3})]
    return rec


def test_joining_a_session_part_way_starts_from_its_state_then() -> None:
    server = FeedServer(_recording(), Options(from_s=15))
    assert server.capture_ns() == 15 * 10**9
    assert server.playback.index == 1
    assert server.playback.snapshot()["TimingData"]["Lines"]["1"]["NumberOfLaps"] == 1


def test_a_frame_carries_the_laps_it_completes(tmp_path: Path) -> None:
    async def run() -> list[object]:
        server = FeedServer(_recording(), Options(sent_log=tmp_path / "sent.log"))
        conn = Connection(websocket=None, topics=frozenset({"TimingData", "LapCount"}))  # type: ignore[arg-type]
        server.connections.add(conn)
        server._fan_out(_recording().deltas)
        return [conn.queue.get_nowait()]

    [(frame, laps)] = asyncio.run(run())  # type: ignore[misc]
    assert laps == [(1, 1), (1, 2)]
    assert frame.count("\x1e") == 3 and frame.count('"target": "feed"') == 3


def test_a_subscription_carries_the_services_clock_as_its_heartbeat() -> None:
    """A recording made topic by topic has no Heartbeat at its start: the snapshot still carries
    the service's clock at that instant, as the real service's does, and only the topics asked for."""
    server = FeedServer(_recording(), Options(from_s=15))
    state = server.subscription_state(frozenset({"Heartbeat", "LapCount"}))
    assert state == {"Heartbeat": {"Utc": "1970-01-01T00:00:15Z"}, "LapCount": {"CurrentLap": 1}}
    assert "Heartbeat" not in server.subscription_state(frozenset({"LapCount"}))
