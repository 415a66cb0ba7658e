"""The pure parts of serving: SSE framing (byte for byte), ids, queues, rate limiting, Avro checks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sse_starlette.event import ServerSentEvent

from serving.ingest import to_datum
from serving.ratelimit import RateLimiter
from serving.sse.framing import Message, SSEParser, encode_frame, leaderboard_id, parse_last_event_id
from serving.sse.hub import RESYNC, Subscriber
from serving.store import StreamEntry, StreamId


def test_frames_are_byte_for_byte_sse() -> None:
    assert encode_frame("event", "1700000000000-0", b'{"a":1}') == (
        b"id: 1700000000000-0\r\nevent: event\r\ndata: {\"a\":1}\r\n\r\n")
    assert encode_frame("leaderboard", "1-0.v3", "{}", retry=2000) == (
        b"id: 1-0.v3\r\nevent: leaderboard\r\ndata: {}\r\nretry: 2000\r\n\r\n")
    # the same bytes as sse-starlette's own encoder
    assert encode_frame("x", "2-1", "d") == ServerSentEvent(data="d", event="x", id="2-1").encode()


def test_frames_survive_newlines_in_data() -> None:
    frame = encode_frame("commentary", "3-0", "line one\nline two")
    (event,) = SSEParser().feed(frame)
    assert event.data == "line one\nline two" and event.id == "3-0"


def test_stream_ids_order_numerically() -> None:
    ids = ["1700000000000-10", "1700000000000-2", "999999999999-99", "1700000000001-0"]
    assert [str(s) for s in sorted(map(StreamId.parse, ids))] == [
        "999999999999-99", "1700000000000-2", "1700000000000-10", "1700000000001-0"]
    with pytest.raises(ValueError, match="not a Redis stream id"):
        StreamId.parse("12")


@pytest.mark.parametrize(("text", "expected"), [
    ("5-1", (StreamId(5, 1), -1)),
    ("5-1.v9", (StreamId(5, 1), 9)),
    (" 0-0.v0 ", (StreamId(0, 0), 0)),
])
def test_last_event_id(text: str, expected: tuple[StreamId, int]) -> None:
    assert parse_last_event_id(text) == expected
    if expected[1] >= 0:
        assert parse_last_event_id(leaderboard_id(*expected)) == expected


@pytest.mark.parametrize("text", ["", "abc", "5-1.vX", "5-1.v", "5.v1", "-1-0"])
def test_bad_last_event_id(text: str) -> None:
    with pytest.raises(ValueError):
        parse_last_event_id(text)


def test_leaderboard_frame_takes_the_clients_cursor() -> None:
    msg = Message.leaderboard(StreamId(10, 0), 4, b"{}")
    assert msg.frame_for(StreamId(10, 0)) is msg.frame
    assert msg.frame_for(StreamId(12, 3)).startswith(b"id: 12-3.v4\r\n")


def _event(ms: int) -> Message:
    return Message.event(StreamEntry(StreamId(ms, 0), "OVERTAKE", b"{}"))


def test_subscriber_overflow_becomes_one_resync_marker() -> None:
    async def scenario() -> None:
        sub = Subscriber("r", maxlen=3)
        assert all(sub.put(_event(i)) for i in range(3))
        assert sub.put(_event(3)) is False  # overflow: backlog dropped, marker queued
        assert sub.put(_event(4)) is True  # while a resync is pending nothing else is kept
        assert await sub.get_all() == [RESYNC]
        sub.put(_event(5))
        assert [m.cursor.ms for m in await sub.get_all()] == [5]
        assert sub.overflows == 1

    asyncio.run(scenario())


def test_subscriber_wakes_its_reader() -> None:
    async def scenario() -> None:
        sub = Subscriber("r", maxlen=8)
        task = asyncio.create_task(sub.get_all())
        await asyncio.sleep(0)
        sub.put(_event(1))
        sub.put(_event(2))
        got = await asyncio.wait_for(task, 1)
        assert [m.cursor.ms for m in got] == [1, 2]

    asyncio.run(scenario())


def test_rate_limiter_refills_and_is_bounded() -> None:
    rl = RateLimiter(rate=2, burst=2, max_clients=3)
    assert [rl.allow("a", 0.0), rl.allow("a", 0.0), rl.allow("a", 0.0)] == [True, True, False]
    assert rl.retry_after("a") == pytest.approx(0.5)
    assert rl.allow("a", 0.5)
    for ip in "bcde":
        rl.allow(ip, 1.0)
    assert len(rl._buckets) == 3
    assert RateLimiter(rate=0, burst=1).allow("x")


def test_avro_check_converts_json() -> None:
    session = {"event_id": "s", "race_id": "r", "name": "GP", "circuit": "C", "total_laps": 3,
               "track_length_m": 5000, "start_time": "2025-03-16T15:00:00Z",
               "drivers": [{"number": 1, "code": "AAA", "name": "A", "team": "T"}]}
    datum, errors = to_datum("f1.race.session", session)
    assert errors == []
    assert datum is not None and datum["start_time"] == datetime(2025, 3, 16, 15, tzinfo=UTC)
    assert datum["drivers"][0]["team_colour"] == "888888"  # the schema's default


@pytest.mark.parametrize(("change", "loc", "words"), [
    ({"start_time": "2025-03-16T15:00:00"}, ("body", "record", "start_time"), "time zone"),
    ({"start_time": "soon"}, ("body", "record", "start_time"), "ISO 8601"),
    ({"total_laps": 2**40}, ("body", "record", "total_laps"), "out of range"),
    ({"total_laps": True}, ("body", "record", "total_laps"), "expected int, got boolean"),
    ({"drivers": [{"number": 1, "code": 5, "name": "A", "team": "T"}]},
     ("body", "record", "drivers", 0, "code"), "expected string"),
    ({"drivers": "none"}, ("body", "record", "drivers"), "expected an array"),
])
def test_avro_check_names_the_field(change: dict[str, object], loc: tuple[object, ...], words: str) -> None:
    session = {"event_id": "s", "race_id": "r", "name": "GP", "circuit": "C", "total_laps": 3,
               "track_length_m": 5000, "start_time": 0, "drivers": [], **change}
    datum, errors = to_datum("f1.race.session", session)
    assert datum is None
    assert [(e.loc, words in e.msg) for e in errors] == [(loc, True)], errors


def test_avro_check_unions_and_enums() -> None:
    control = {"event_id": "c", "race_id": "r", "ts_ms": 1, "kind": "TRACK_STATUS", "track_status": None}
    assert to_datum("f1.race.control", control)[1] == []
    _, errors = to_datum("f1.race.control", {**control, "track_status": "BLUE"})
    assert errors[0].loc[-1] == "track_status" and "GREEN" in errors[0].msg
    _, errors = to_datum("f1.race.control", {**control, "kind": "NOPE"})
    assert errors[0].loc[-1] == "kind"
    _, errors = to_datum("f1.race.leaderboard", control)
    assert errors[0].loc == ("body", "topic")


def test_leaderboard_delta_round_trips() -> None:
    from serving.sse.framing import leaderboard_delta

    old = {"version": 7, "lap": 2, "hero": None, "rows": [
        {"driver_number": 1, "code": "AAA", "progress": 2.5, "gap_ms": None},
        {"driver_number": 2, "code": "BBB", "progress": 2.4, "gap_ms": 900}],
        "positions": {"1": [0.0, 0.0], "2": [3.0, 4.0]}}
    new = {"version": 9, "lap": 3, "hero": {"code": "BBB"}, "rows": [
        {"driver_number": 2, "code": "BBB", "progress": 3.01, "gap_ms": None},
        {"driver_number": 1, "code": "AAA", "progress": 3.0, "gap_ms": 100},
        {"driver_number": 3, "code": "CCC", "progress": 1.0, "gap_ms": None}],
        "positions": {"1": [1.0, 0.0], "3": [9.0, 9.0]}}
    d = leaderboard_delta(old, new)
    assert (d["version"], d["base"], d["lap"], d["hero"]) == (9, 7, 3, {"code": "BBB"})
    assert d["order"] == [2, 1, 3]
    assert d["rows"]["3"] == new["rows"][2]  # a new row comes whole
    assert d["positions"] == {"1": [1.0, 0.0], "3": [9.0, 9.0]} and d["positions_removed"] == ["2"]
    # applying it to the old document gives the new one
    rows = {r["driver_number"]: r for r in old["rows"]}
    for n, changed in d["rows"].items():
        rows[int(n)] = {**rows.get(int(n), {}), **changed}
    rebuilt = {**old, **{k: v for k, v in d.items() if k not in ("rows", "order", "positions", "positions_removed",
                                                                 "base")}}
    rebuilt["rows"] = [rows[n] for n in d["order"]]
    positions = {**old["positions"], **d["positions"]}
    for k in d["positions_removed"]:
        del positions[k]
    rebuilt["positions"] = positions
    assert rebuilt == new
    assert "order" not in leaderboard_delta(new, {**new, "version": 10})
