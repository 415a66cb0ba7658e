"""How the live client stamps what arrives (the network and the connection itself are tested
against ``racewire feed-server`` in tests/integration/test_live_feed.py)."""

from __future__ import annotations

from typing import Any

from simulator.sources.feed import INIT, feed_timestamp
from simulator.sources.live import LiveFeed

NOW = 1_796_000_000_000_000_000  # "now" on this machine (2026)
THEN = 1_730_555_234_000_000_000  # a played back session (2024)


def _feed() -> tuple[LiveFeed, list[tuple[int, str, Any]]]:
    got: list[tuple[int, str, Any]] = []
    return LiveFeed("http://feed", lambda ns, topic, data: got.append((ns, topic, data))), got


def test_deltas_carry_the_services_clock_and_snapshots_follow_it() -> None:
    feed, _ = _feed()
    # a live session: the snapshot's heartbeat is close to our clock, so its arrival is its time
    assert feed._stamp(NOW, INIT, {"Heartbeat": {"Utc": feed_timestamp(NOW - 5 * 10**9)}}, None) == NOW
    assert feed._stamp(NOW + 10**9, "TimingData", {}, feed_timestamp(NOW + 900_000_000)) == NOW + 900_000_000
    # a snapshot after a reconnection: arrival moved by the offset the service's clock had
    assert feed._stamp(NOW + 3 * 10**9, INIT, {}, None) == NOW + 3 * 10**9 - 100_000_000


def test_a_played_back_session_keeps_its_own_clock() -> None:
    feed, _ = _feed()
    snapshot = {"Heartbeat": {"Utc": feed_timestamp(THEN)}}
    assert feed._stamp(NOW, INIT, snapshot, None) == THEN
    assert feed._stamp(NOW + 10**7, "LapCount", {}, feed_timestamp(THEN + 2 * 10**9)) == THEN + 2 * 10**9


def test_stamps_never_go_back() -> None:
    feed, _ = _feed()
    first = feed._stamp(NOW, "LapCount", {}, feed_timestamp(NOW))
    assert feed._stamp(NOW + 1, "LapCount", {}, feed_timestamp(NOW - 10**9)) == first
    assert feed._stamp(NOW + 2, "LapCount", {}, "not a time") >= first


def test_delivery_observes_the_session_and_stops_once_final_when_asked() -> None:
    feed, got = _feed()
    feed.until_finished = True
    feed._deliver(INIT, {"SessionInfo": {"Meeting": {"Name": "Test GP"}, "Name": "Sprint"},
                         "SessionStatus": {"Status": "Started"}, "LapCount": {"CurrentLap": 3}})
    assert (feed.stats.session, feed.stats.session_status, feed.stats.lap) == ("Test GP Sprint", "Started", 3)
    assert not feed.stop.is_set()
    feed._deliver("SessionStatus", {"Status": "Finalised"}, feed_timestamp(NOW))
    assert feed.stop.is_set() and feed.stats.messages == 2 and [t for _, t, _ in got] == [INIT, "SessionStatus"]
