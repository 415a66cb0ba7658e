"""The documents the race flow's sinks store, shared by the Redis and PostgreSQL sinks: the
leaderboard snapshot with what only the live store keeps (:class:`BoardUpdate`), the session for
serving (:class:`SessionDoc`), and the layouts of the leaderboard document and of a race's
summary in the races index."""

from __future__ import annotations

from typing import Any

from schemas.model import Leaderboard, Session


def leaderboard_document(board: Leaderboard, positions: dict[int, tuple[float, float]] | None = None
                         ) -> dict[str, Any]:
    doc = board.to_dict()
    if positions:
        doc["positions"] = {str(n): [round(x, 1), round(y, 1)] for n, (x, y) in positions.items()}
    return doc


def race_summary(board: Leaderboard, name: str | None = None) -> dict[str, Any]:
    status = "finished" if board.final else ("chequered" if board.finished else "live")
    leader = board.rows[0].code if board.rows else None
    return {"race_id": board.race_id, "name": name, "lap": board.lap, "total_laps": board.total_laps,
            "status": status, "track_status": str(board.track_status), "leader": leader,
            "version": board.version}


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
