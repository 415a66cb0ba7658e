"""The Redis layout: every key racewire keeps in Redis and every document stored there, defined once.

The race dataflow writes these keys (:class:`~dataflows.connectors.redis_sink.RedisWriter`);
serving reads them (:class:`~serving.store.RaceStore`, the SSE hub), answers in the same documents
from PostgreSQL while Redis cannot (:mod:`serving.fallback`), and ``racewire rebuild-cache``,
the drills, the reports, the benchmarks and the tests read or write them through this module. It
is pure (no Redis client, no I/O): key names, stream caps and fields, document layouts.

Per race (``{id}`` = race id; :func:`race_keys_pattern` matches them all):

=================================  ===========  =====================================================
key                                type         contents
=================================  ===========  =====================================================
``race:{id}:state``                string       JSON leaderboard document (:func:`leaderboard_document`:
                                                rows, hero, fastest lap, flag, lap, ``positions``)
``race:{id}:version``              string       the state document's version; a write whose version
                                                is not above it is ignored
``race:{id}:leaderboard``          sorted set   member driver number, score running position
``race:{id}:events``               stream       race events and commentary (fields :data:`EVENT_FIELDS`;
                                                type ``COMMENTARY`` for commentary), capped at
                                                :data:`EVENTS_MAXLEN` (approximately)
``race:{id}:event_index``          hash         event id → stream id: each event added once, and
                                                under its id again after a data loss
``race:{id}:updates``              stream       one entry per state version (field ``version``),
                                                capped at :data:`UPDATES_MAXLEN`: wakes SSE readers
``race:{id}:session``              string       JSON session (:func:`session_document`: entry list,
                                                track outline, laps)
``race:{id}:lapchart``             hash         lap → JSON list of driver numbers in crossing order
``race:{id}:stints``               hash         ``driver:stint`` → JSON of the stint's latest features
``race:{id}:strategy``             hash         driver → JSON of the car's latest strategy call
``race:{id}:stints:order``,        hash         field → order of the stored value (:func:`order_key`):
``race:{id}:strategy:order``                    a write older than the stored value is ignored
``race:{id}:strategy:history``     hash         ``lap:driver`` → JSON of every call made
=================================  ===========  =====================================================

Shared keys:

=================================  ===========  =====================================================
``races`` (:data:`RACES_KEY`)      hash         race id → JSON summary (:func:`race_summary`), the
                                                race list
``racewire:sink:epoch``            string       the writers' data-loss token (:data:`SENTINEL_KEY`):
                                                missing or changed means Redis lost data
``racewire:flow:status:<process>`` string (TTL) a flow process's status document
                                                (:func:`flow_status_key`; layout in
                                                :mod:`dataflows.metrics`)
=================================  ===========  =====================================================

Writers: the race dataflow's Redis sink (every race key, ``races``, the token), ``racewire
rebuild-cache`` (through the same writer), the flow's status reporter (the status documents).
Readers: serving (store, SSE hub, health), the fallback's documents (same layouts, from
PostgreSQL), the drills, the reports and benchmarks.
"""

from __future__ import annotations

from typing import Any

from schemas.model import Leaderboard, Session

# ------------------------------------------------------------------------------------ keys

#: hash race id → JSON summary of the race, for the race list
RACES_KEY = "races"
#: the writers' data-loss token: when it is missing or changed, Redis has lost data
SENTINEL_KEY = "racewire:sink:epoch"
#: every flow process's status document (see :func:`flow_status_key`)
FLOW_STATUS_PATTERN = "racewire:flow:status:*"


def state_key(race_id: str) -> str:
    """JSON leaderboard document of the latest snapshot (:func:`leaderboard_document`)."""
    return f"race:{race_id}:state"


def version_key(race_id: str) -> str:
    """The version of the stored state document."""
    return f"race:{race_id}:version"


def leaderboard_key(race_id: str) -> str:
    """Sorted set: member driver number, score running position."""
    return f"race:{race_id}:leaderboard"


def events_key(race_id: str) -> str:
    """Capped stream of race events and commentary (fields :data:`EVENT_FIELDS`)."""
    return f"race:{race_id}:events"


def event_index_key(race_id: str) -> str:
    """Hash event id → stream id of every event added to the events stream."""
    return f"race:{race_id}:event_index"


def updates_key(race_id: str) -> str:
    """Capped stream with one entry (field :data:`UPDATE_VERSION_FIELD`) per state version."""
    return f"race:{race_id}:updates"


def session_key(race_id: str) -> str:
    """JSON session document (:func:`session_document`)."""
    return f"race:{race_id}:session"


def lapchart_key(race_id: str) -> str:
    """Hash lap → JSON list of driver numbers in crossing order at that lap."""
    return f"race:{race_id}:lapchart"


def stints_key(race_id: str) -> str:
    """Hash ``driver:stint`` → JSON of the stint's latest features."""
    return f"race:{race_id}:stints"


def strategy_key(race_id: str) -> str:
    """Hash driver → JSON of the car's latest strategy call."""
    return f"race:{race_id}:strategy"


def strategy_history_key(race_id: str) -> str:
    """Hash ``lap:driver`` → JSON of every strategy call made."""
    return f"race:{race_id}:strategy:history"


def order_key(key: str) -> str:
    """The hash beside a forward-only hash (stints, strategy) holding each field's order: a value
    is replaced only by one of the same or a higher order."""
    return f"{key}:order"


def race_keys_pattern(race_id: str) -> str:
    """SCAN pattern matching every per-race key of ``race_id`` (not its ``races`` entry)."""
    return f"race:{race_id}:*"


def flow_status_key(process: int | str) -> str:
    """One flow process's status document (rewritten every few seconds, with a time to live)."""
    return f"racewire:flow:status:{process}"


# ------------------------------------------------------------------------------------ streams

#: default caps of the capped streams (``MAXLEN ~``): events per race, state versions per race
EVENTS_MAXLEN = 20_000
UPDATES_MAXLEN = 1000
#: fields of an events-stream entry: the event id, its type (``RaceEvent.type``, or
#: :data:`COMMENTARY_TYPE`), its JSON (``to_dict()``), as Redis returns them
EVENT_ID_FIELD = b"event_id"
EVENT_TYPE_FIELD = b"type"
EVENT_JSON_FIELD = b"json"
EVENT_FIELDS = (EVENT_ID_FIELD, EVENT_TYPE_FIELD, EVENT_JSON_FIELD)
#: the type of a commentary line in the events stream
COMMENTARY_TYPE = "COMMENTARY"
#: the field of an updates-stream entry: the state version
UPDATE_VERSION_FIELD = b"version"


# ------------------------------------------------------------------------------------ documents

def leaderboard_document(board: Leaderboard, positions: dict[int, tuple[float, float]] | None = None
                         ) -> dict[str, Any]:
    """``race:{id}:state``: the leaderboard's ``to_dict()`` plus ``positions`` (x/y per car, for the map)."""
    doc = board.to_dict()
    if positions:
        doc["positions"] = {str(n): [round(x, 1), round(y, 1)] for n, (x, y) in positions.items()}
    return doc


def race_status(finished: Any, final: Any) -> str:
    """A race's status in its summary: ``finished`` (final classification), ``chequered``, ``live``."""
    return "finished" if final else ("chequered" if finished else "live")


def summary_document(race_id: Any, name: Any, lap: Any, total_laps: Any, status: Any, track_status: Any,
                     leader: Any, version: Any) -> dict[str, Any]:
    """A race's entry in the ``races`` hash (the race list)."""
    return {"race_id": race_id, "name": name, "lap": lap, "total_laps": total_laps, "status": status,
            "track_status": track_status, "leader": leader, "version": version}


def race_summary(board: Leaderboard, name: str | None = None) -> dict[str, Any]:
    """The ``races`` entry of a leaderboard snapshot."""
    return summary_document(board.race_id, name, board.lap, board.total_laps, race_status(board.finished, board.final),
                            str(board.track_status), board.rows[0].code if board.rows else None, board.version)


def summary_of_state(doc: dict[str, Any], name: str | None) -> dict[str, Any]:
    """:func:`race_summary` of a stored state document."""
    rows = doc.get("rows") or []
    return summary_document(doc.get("race_id"), name, doc.get("lap"), doc.get("total_laps"),
                            race_status(doc.get("finished"), doc.get("final")), doc.get("track_status"),
                            rows[0].get("code") if rows else None, doc.get("version"))


def session_document(session: Session) -> dict[str, Any]:
    """``race:{id}:session``: the session's ``to_dict()`` with its start time in ISO 8601."""
    doc = session.to_dict()
    doc["start_time"] = session.start_time.isoformat()
    return doc


class BoardUpdate:
    """A leaderboard snapshot with what only Redis keeps: car x/y for the map, the race name."""

    __slots__ = ("board", "name", "positions")

    def __init__(self, board: Leaderboard, positions: dict[int, tuple[float, float]] | None,
                 name: str | None) -> None:
        self.board, self.positions, self.name = board, positions, name


class SessionDoc:
    """The race's session, for serving (entry list, track outline)."""

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        self.session = session
