"""The Redis layout (``schemas.redis_layout``): the key names on the wire, the stream fields the
writer's scripts spell, and the documents every writer and reader builds."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
from typing import Any

import orjson
import pytest

from dataflows.connectors import redis_sink
from schemas import redis_layout as layout
from schemas.model import Leaderboard
from serving.fallback import race_summary_document
from serving.store import StreamEntry
from tests.support.race_builder import Race

#: the wire layout, spelled out: changing a key name breaks every reader of a running Redis
WIRE = {
    layout.state_key: "race:r1:state",
    layout.version_key: "race:r1:version",
    layout.leaderboard_key: "race:r1:leaderboard",
    layout.events_key: "race:r1:events",
    layout.event_index_key: "race:r1:event_index",
    layout.updates_key: "race:r1:updates",
    layout.session_key: "race:r1:session",
    layout.lapchart_key: "race:r1:lapchart",
    layout.stints_key: "race:r1:stints",
    layout.strategy_key: "race:r1:strategy",
    layout.strategy_history_key: "race:r1:strategy:history",
}


@pytest.mark.parametrize(("key", "name"), WIRE.items(), ids=[k.__name__ for k in WIRE])
def test_race_key_names_on_the_wire(key: Any, name: str) -> None:
    assert key("r1") == name
    assert fnmatch.fnmatchcase(name, layout.race_keys_pattern("r1"))
    assert not fnmatch.fnmatchcase(name, layout.race_keys_pattern("r2"))


def test_shared_key_names_on_the_wire() -> None:
    assert layout.RACES_KEY == "races"
    assert layout.SENTINEL_KEY == "racewire:sink:epoch"
    assert layout.order_key(layout.stints_key("r1")) == "race:r1:stints:order"
    assert layout.order_key(layout.strategy_key("r1")) == "race:r1:strategy:order"
    assert fnmatch.fnmatchcase(layout.order_key(layout.strategy_key("r1")), layout.race_keys_pattern("r1"))
    assert layout.flow_status_key(3) == "racewire:flow:status:3"
    assert fnmatch.fnmatchcase(layout.flow_status_key(3), layout.FLOW_STATUS_PATTERN)


def test_the_writer_scripts_spell_the_layout_stream_fields() -> None:
    for script in (redis_sink._ADD_EVENTS, redis_sink._REWRITE_EVENTS):
        for field in layout.EVENT_FIELDS:
            assert f"'{field.decode()}'" in script
    assert f"'{layout.UPDATE_VERSION_FIELD.decode()}'" in redis_sink._PUT_STATE


def test_the_reader_takes_an_entry_in_the_layout_fields() -> None:
    fields = {layout.EVENT_ID_FIELD: b"r1:c:1", layout.EVENT_TYPE_FIELD: layout.COMMENTARY_TYPE.encode(),
              layout.EVENT_JSON_FIELD: b'{"text": "hi"}'}
    entry = StreamEntry.from_redis(b"5-1", fields)
    assert (str(entry.id), entry.type, entry.kind, entry.json) == ("5-1", "COMMENTARY", "commentary", b'{"text": "hi"}')


def _board() -> Leaderboard:
    r = Race(cars=3, laps=2)
    for n, t in ((1, 90_000), (2, 90_500), (3, 91_000), (2, 180_000), (1, 180_400), (3, 181_000)):
        r.lap(n, 1 if t < 100_000 else 2, t)
    return [o for o in r.outputs if isinstance(o, Leaderboard)][-1]


def test_every_summary_of_a_race_has_one_layout() -> None:
    board = _board()
    summary = layout.race_summary(board, "Test GP")
    assert summary == {"race_id": "r", "name": "Test GP", "lap": board.lap, "total_laps": 2,
                       "status": layout.race_status(board.finished, board.final),
                       "track_status": str(board.track_status), "leader": board.rows[0].code,
                       "version": board.version}
    # read back from the stored state document (the writer after a restart), byte for byte
    stored = orjson.loads(orjson.dumps(layout.leaderboard_document(board, {1: (1.04, 2.0)})))
    assert stored["positions"] == {"1": [1.0, 2.0]}
    assert orjson.dumps(layout.summary_of_state(stored, "Test GP")) == orjson.dumps(summary)
    # rebuilt from PostgreSQL's races row (the fallback, rebuild-cache): the same fields, in the same order
    row = {"race_id": "r", "name": "Test GP", "lap": board.lap, "total_laps": 2, "status": summary["status"],
           "track_status": summary["track_status"], "board_version": board.version}
    assert orjson.dumps(race_summary_document(row, board.rows[0].code)) == orjson.dumps(summary)


def test_race_status() -> None:
    assert [layout.race_status(f, x) for f, x in ((False, False), (True, False), (True, True))] == [
        "live", "chequered", "finished"]


def test_session_document_has_an_iso_start_time() -> None:
    session = Race().session
    doc = orjson.loads(orjson.dumps(layout.session_document(session)))
    assert doc["start_time"] == "2024-03-02T15:00:00+00:00"
    assert doc["race_id"] == "r" and [d["code"] for d in doc["drivers"]] == ["AAA", "BBB", "CCC"]


def test_the_layout_and_the_reader_load_no_redis_client_and_no_bytewax() -> None:
    code = ("import sys, schemas.redis_layout; bad = {'redis', 'bytewax'} & set(sys.modules); assert not bad, bad; "
            "import serving.store; assert 'bytewax' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
