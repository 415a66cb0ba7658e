"""The race flow's wiring: the routing table, and the documents made at the sinks."""

from __future__ import annotations

from typing import get_args

from dataflows.outputs import BoardSnapshot, FlowOutput, LapChart, Rejected, Tower
from dataflows.race.board import leaderboard
from dataflows.race.driver import DriverState, DriverUpdate
from dataflows.race_flow import KAFKA, PG, RAW, REDIS, ROUTES, document, routed_to
from schemas.model import ControlKind, Lap, RaceEvent, Session, TrackStatus
from schemas.redis_layout import BoardUpdate, SessionDoc
from tests.support.race_builder import Race


def test_every_flow_output_has_a_route() -> None:
    assert set(get_args(FlowOutput)) | {DriverUpdate} == set(ROUTES)


def test_each_sink_gets_what_it_got_before() -> None:
    r = Race(cars=2)
    r.lap(1, 1, 90_000)
    r.control(95_000, ControlKind.TRACK_STATUS, TrackStatus.SC)
    board = BoardSnapshot(leaderboard(r.state), r.state.positions(), "Test GP")
    event = r.events()[0]
    chart = LapChart("r", 1, [1])
    tower = Tower("r", 1, 1, 90_000, board.board.track_status, [])
    rejected = Rejected("bad", "INVALID", "decode")
    lap = DriverState().update(Lap("r:lap:1:1", "r", 1, 1, 90_000, 90_000))
    items: list[object] = [board, chart, tower, rejected, r.session, lap, event]
    wanted = {sink: [type(i) for i in items if routed_to(sink)(i)] for sink in (KAFKA, REDIS, PG, RAW)}
    assert set(wanted[KAFKA]) == set(wanted[RAW]) == {BoardSnapshot, Rejected, RaceEvent}
    assert set(wanted[REDIS]) == {BoardSnapshot, LapChart, Session, RaceEvent}
    assert set(wanted[PG]) == set(wanted[REDIS]) | {Tower, DriverUpdate}


def test_documents_are_made_at_the_sink() -> None:
    r = Race(cars=2)
    r.tel(1, 1_000, 1, 0.1)
    snapshot = BoardSnapshot(leaderboard(r.state), r.state.positions(), "Test GP")
    doc = document(snapshot)
    assert isinstance(doc, BoardUpdate) and doc.board is snapshot.board and doc.name == "Test GP"
    assert doc.positions == {1: (0.0, 0.0)}
    session = document(r.session)
    assert isinstance(session, SessionDoc) and session.session is r.session
    chart = LapChart("r", 1, [1, 2])
    assert document(chart) is chart
