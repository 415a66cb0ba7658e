"""What the race flow emits, in one place: the race step's outputs and the one rejection type.

- :class:`Rejected`: an input refused at the edge (decode, validation) or by a step (per-driver,
  race); it becomes a dead letter (:meth:`Rejected.dead_letter`), built here and nowhere else.
- :class:`LapChart`: the order at the timing line at the end of a lap.
- :class:`Tower`: the timing tower at the end of a lap (see :mod:`dataflows.race.towers`).
- :class:`BoardSnapshot`: a leaderboard snapshot with the cars' positions on the map at that instant.

:data:`RaceOutput` is what the race processor (:class:`~dataflows.race.processor.RaceProcessor`)
returns; :data:`FlowOutput` is what the flow hands to its sinks (``race_flow.ROUTES`` says which
sink gets which type). The sinks' own documents are made from these at the sink
(:func:`dataflows.race_flow.document`), never inside the stateful step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from schemas.model import (
    Commentary,
    DeadLetter,
    Leaderboard,
    LeaderboardRow,
    RaceEvent,
    Recommendation,
    Session,
    Stint,
    TrackStatus,
)

if TYPE_CHECKING:
    from dataflows.connectors.kafka_source import MessageRef


@dataclass(slots=True, frozen=True)
class Rejected:
    """An input refused, with the reason; becomes a dead letter.

    ``step`` names who refused it (``decode``, ``driver-state``, ``race-state``); ``msg`` is where
    the record came from (a picklable :class:`~dataflows.connectors.kafka_source.MessageRef`),
    attached by the step that holds it (:meth:`attach`).

    >>> r = Rejected("lap 3 out of sequence", "OUT_OF_SEQUENCE", "driver-state", race_id="r")
    >>> d = r.dead_letter()
    >>> d.source_topic, d.error_type, d.step, d.race_id
    ('unknown', 'OUT_OF_SEQUENCE', 'driver-state', 'r')
    """

    reason: str
    error_type: str
    step: str
    msg: MessageRef | None = None
    race_id: str | None = None

    def attach(self, msg: Any) -> Rejected:
        """The same rejection, with the reference of the message it refused."""
        return replace(self, msg=msg)

    def dead_letter(self) -> DeadLetter:
        """The ``f1.deadletter`` record: the reason, and the original message's place and bytes."""
        ref = self.msg
        if ref is None:
            return DeadLetter(source_topic="unknown", reason=self.reason, error_type=self.error_type,
                              step=self.step, received_at=datetime.now(UTC), race_id=self.race_id)
        return DeadLetter(
            source_topic=ref.topic or "unknown", reason=self.reason, error_type=self.error_type,
            step=self.step, received_at=datetime.now(UTC), key=ref.key, value=ref.value,
            partition=ref.partition, offset=ref.offset, race_id=self.race_id,
        )


@dataclass(slots=True)
class LapChart:
    """The order at the timing line at the end of one lap (cars that completed it, by crossing)."""

    race_id: str
    lap: int
    order: list[int]


@dataclass(slots=True)
class Tower:
    """The timing tower at the end of one lap (a row of PostgreSQL ``standings``)."""

    race_id: str
    lap: int
    #: the race state's version when it was emitted: a later emission of the same lap supersedes it
    version: int
    #: session time at which the lap was over for everyone
    ts_ms: int
    track_status: TrackStatus
    rows: list[LeaderboardRow]


@dataclass(slots=True, frozen=True)
class BoardSnapshot:
    """A leaderboard snapshot with the cars' last known x/y at that instant (for the track map)
    and the race's name."""

    board: Leaderboard
    positions: dict[int, tuple[float, float]]
    name: str | None


#: what the race processor returns for a batch
RaceOutput = Leaderboard | RaceEvent | Rejected | LapChart | Stint | Recommendation | Tower

#: what the race flow hands to its sinks: the race step's outputs (a leaderboard as a
#: :class:`BoardSnapshot`), the session when it changes, commentary, and every rejection
FlowOutput = (BoardSnapshot | Session | RaceEvent | Commentary | Rejected | LapChart | Stint
              | Recommendation | Tower)
