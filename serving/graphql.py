"""GraphQL at ``/graphql`` (strawberry): races, drivers, laps, events and standings.

It reads the same PostgreSQL store as the history endpoints (:mod:`serving.routes.history`), through
the same async pool (:func:`~serving.routes.history.get_history_db`), so it answers whether or not
Redis is up, and reports a missing or unreachable database as a GraphQL error.

Laps are a Relay-style connection (``first``/``after``; the cursor is opaque), ordered by lap then
driver like ``GET /api/races/{id}/laps``::

    { laps(race: "r", driver: 44, fromLap: 10, toLap: 20, first: 5) {
        edges { cursor node { lap lapTimeMs position gapMs compound } }
        pageInfo { hasNextPage endCursor } } }
"""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import datetime
from typing import Any

import strawberry
from fastapi import Response
from graphql import FieldNode, FragmentSpreadNode, GraphQLError, InlineFragmentNode, IntValueNode, VariableNode
from graphql.language import FragmentDefinitionNode, OperationDefinitionNode, SelectionSetNode
from graphql.validation import ValidationRule
from strawberry.extensions import AddValidationRules, MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.fastapi import GraphQLRouter
from strawberry.scalars import JSON
from strawberry.types import Info

from schemas.settings import Settings
from serving.deps import PG_INT_MAX, RateLimited
from serving.routes.history import _LAP_FIELDS, HistoryDb, get_history_db

MAX_PAGE = 5000
log = logging.getLogger("racewire.serving.graphql")


def _db(info: Info) -> HistoryDb:
    return get_history_db(info.context["request"])


@strawberry.type(description="A driver's entry in one race.")
class Driver:
    race_id: str
    number: int
    code: str
    name: str
    team: str
    team_colour: str
    grid_position: int | None

    @classmethod
    def of(cls, r: dict[str, Any]) -> Driver:
        return cls(race_id=r["race_id"], number=r["driver_number"], code=r["code"], name=r["name"],
                   team=r["team"], team_colour=r["team_colour"], grid_position=r["grid_position"])


_DRIVER_SQL = """SELECT race_id, driver_number, code, name, team, team_colour, grid_position FROM drivers
                 WHERE race_id = %(race)s ORDER BY grid_position NULLS LAST, driver_number"""


@strawberry.type(description="A stored race with its status and, once the flag has fallen, its winner.")
class Race:
    id: str
    name: str | None
    circuit: str | None
    start_time: datetime | None
    total_laps: int | None
    lap: int
    status: str
    track_status: str | None
    winner: int | None
    winner_code: str | None

    @classmethod
    def of(cls, r: dict[str, Any]) -> Race:
        return cls(id=r["race_id"], name=r["name"], circuit=r["circuit"], start_time=r["start_time"],
                   total_laps=r["total_laps"], lap=r["lap"], status=r["status"], track_status=r["track_status"],
                   winner=r["winner"], winner_code=r["winner_code"])

    @strawberry.field(description="The race's drivers, in grid order.")
    async def drivers(self, info: Info) -> list[Driver]:
        return [Driver.of(r) for r in await _db(info).fetch(_DRIVER_SQL, {"race": self.id})]


_RACE_SQL = """SELECT r.race_id, r.name, r.circuit, r.start_time, r.total_laps, r.lap, r.status, r.track_status,
                      r.winner, d.code AS winner_code
               FROM races r LEFT JOIN drivers d ON d.race_id = r.race_id AND d.driver_number = r.winner"""


@strawberry.type(description="One completed lap: times, position and gap at the line, tyres, pit flags.")
class Lap:
    race_id: str
    driver_number: int
    lap: int
    lap_time_ms: int | None
    sector1_ms: int | None
    sector2_ms: int | None
    sector3_ms: int | None
    crossing_ms: float = strawberry.field(description="session time at the line, ms (a Float: may exceed Int)")
    position: int | None
    gap_ms: float | None
    compound: str | None
    tyre_age: int | None
    pit_in: bool
    pit_out: bool
    pit_lane_ms: int | None
    track_status: str
    deleted: bool
    personal_best: bool | None
    stint: int | None
    representative: bool = strawberry.field(
        description="the lap shows the car's pace (not lap 1, a lap time, green all lap, no pit): the rule "
                    "stints and strategy calls use")


@strawberry.type
class LapEdge:
    cursor: str
    node: Lap


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type(description="A page of laps (Relay connection).")
class LapConnection:
    edges: list[LapEdge]
    page_info: PageInfo

    @strawberry.field(description="the laps of this page, without cursors")
    def nodes(self) -> list[Lap]:
        return [e.node for e in self.edges]


def encode_cursor(lap: int, driver: int) -> str:
    return base64.urlsafe_b64encode(f"lap:{lap}:{driver}".encode()).decode()


def decode_cursor(cursor: str | None) -> tuple[int, int]:
    if cursor is None:
        return -1, -1
    try:
        kind, lap, driver = base64.urlsafe_b64decode(cursor.encode()).decode().split(":")
        if kind != "lap" or not 0 <= int(lap) <= PG_INT_MAX or not 0 <= int(driver) <= PG_INT_MAX:
            raise ValueError(kind)
        return int(lap), int(driver)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise GraphQLError(f"invalid cursor {cursor!r}: pass a previous page's endCursor") from None


@strawberry.type(description="A race event (overtake, pit stop, fastest lap, flag, retirement, ...).")
class Event:
    race_id: str
    event_id: str
    type: str
    lap: int
    ts_ms: float
    driver_number: int | None
    other_driver_number: int | None
    payload: JSON


@strawberry.type(description="One line of the timing tower.")
class StandingRow:
    position: int
    driver_number: int
    code: str | None
    team: str | None
    laps: int | None
    status: str | None
    gap_ms: float | None
    gap_laps: int | None
    interval_ms: float | None
    last_lap_ms: int | None
    best_lap_ms: int | None
    compound: str | None
    tyre_age: int | None
    pit_count: int | None

    @classmethod
    def of(cls, r: dict[str, Any]) -> StandingRow:
        return cls(position=r["position"], driver_number=r["driver_number"],
                   **{k: r.get(k) for k in ("code", "team", "laps", "status", "gap_ms", "gap_laps", "interval_ms",
                                            "last_lap_ms", "best_lap_ms", "compound", "tyre_age", "pit_count")})


@strawberry.type(description="The timing tower as it was at the end of a lap.")
class Standings:
    race_id: str
    lap: int
    version: float
    ts_ms: float
    track_status: str
    rows: list[StandingRow]


def _page_size(first: int) -> int:
    if not 1 <= first <= MAX_PAGE:
        raise GraphQLError(f"first must be between 1 and {MAX_PAGE}")
    return first


@strawberry.type
class Query:
    @strawberry.field(description="Stored races, newest first.")
    async def races(self, info: Info, first: int = 100, offset: int = 0) -> list[Race]:
        rows = await _db(info).fetch(_RACE_SQL + " ORDER BY r.start_time DESC NULLS LAST, r.race_id"
                                     " LIMIT %(limit)s OFFSET %(offset)s",
                                     {"limit": _page_size(first), "offset": max(0, offset)})
        return [Race.of(r) for r in rows]

    @strawberry.field(description="One race, or null when it is not stored.")
    async def race(self, info: Info, id: strawberry.ID) -> Race | None:
        rows = await _db(info).fetch(_RACE_SQL + " WHERE r.race_id = %(race)s", {"race": str(id)})
        return Race.of(rows[0]) if rows else None

    @strawberry.field(description="A race's drivers, in grid order.")
    async def drivers(self, info: Info, race: strawberry.ID) -> list[Driver]:
        return [Driver.of(r) for r in await _db(info).fetch(_DRIVER_SQL, {"race": str(race)})]

    @strawberry.field(description="A race's laps by lap then driver, optionally one driver's and a lap range.")
    async def laps(self, info: Info, race: strawberry.ID, driver: int | None = None, from_lap: int = 0,
                   to_lap: int = 1_000_000, first: int = 1000, after: str | None = None) -> LapConnection:
        limit = _page_size(first)
        after_lap, after_driver = decode_cursor(after)
        rows = await _db(info).fetch(
            f"""SELECT {_LAP_FIELDS} FROM laps
                WHERE race_id = %(race)s AND lap BETWEEN %(from)s AND %(to)s
                  AND (%(driver)s::int IS NULL OR driver_number = %(driver)s::int)
                  AND (lap, driver_number) > (%(al)s, %(ad)s)
                ORDER BY lap, driver_number LIMIT %(limit)s""",
            {"race": str(race), "from": from_lap, "to": to_lap, "driver": driver, "al": after_lap,
             "ad": after_driver, "limit": limit + 1})
        more = len(rows) > limit
        edges = [LapEdge(cursor=encode_cursor(r["lap"], r["driver_number"]), node=Lap(**r)) for r in rows[:limit]]
        return LapConnection(edges=edges, page_info=PageInfo(has_next_page=more,
                                                              end_cursor=edges[-1].cursor if edges else None))

    @strawberry.field(description="A race's events in time order, optionally of one type (e.g. OVERTAKE).")
    async def events(self, info: Info, race: strawberry.ID, type: str | None = None, first: int = 1000,
                     offset: int = 0) -> list[Event]:
        rows = await _db(info).fetch(
            """SELECT race_id, event_id, type, lap, ts_ms, driver_number, other_driver_number, payload FROM events
               WHERE race_id = %(race)s AND (%(type)s::text IS NULL OR type = %(type)s::text)
               ORDER BY ts_ms, event_id LIMIT %(limit)s OFFSET %(offset)s""",
            {"race": str(race), "type": type, "limit": _page_size(first), "offset": max(0, offset)})
        return [Event(**r) for r in rows]

    @strawberry.field(description="The tower at the end of lap N (default: the latest stored lap); null if none.")
    async def standings(self, info: Info, race: strawberry.ID, lap: int | None = None) -> Standings | None:
        rows = await _db(info).fetch(
            """SELECT race_id, lap, version, ts_ms, track_status, rows FROM standings
               WHERE race_id = %(race)s AND (%(lap)s::int IS NULL OR lap = %(lap)s::int)
               ORDER BY lap DESC LIMIT 1""", {"race": str(race), "lap": lap})
        if not rows:
            return None
        r = rows[0]
        return Standings(race_id=r["race_id"], lap=r["lap"], version=r["version"], ts_ms=r["ts_ms"],
                         track_status=r["track_status"], rows=[StandingRow.of(x) for x in r["rows"]])


# ------------------------------------------------------------------------------------- cost limits

#: list fields: the argument giving their size and its default, or a fixed bound (an entry list, a tower)
LIST_SIZES: dict[str, tuple[str | None, int]] = {
    "races": ("first", 100), "laps": ("first", 1000), "events": ("first", 1000),
    "drivers": (None, 30), "rows": (None, 30),
}


def query_cost(operation: OperationDefinitionNode, fragments: dict[str, Any]) -> int:
    """Rows an operation may return: a list field multiplies what it selects by its size (its ``first``
    argument, the argument's variable default, else :data:`MAX_PAGE`; a fixed bound for entry lists and
    towers); sibling fields add up.

    >>> from graphql import parse
    >>> doc = parse("{ a: races(first: 10) { drivers { number } } laps(race: 1) { edges { cursor } } }")
    >>> query_cost(doc.definitions[0], {})
    1300
    """
    defaults = {v.variable.name.value: v.default_value for v in operation.variable_definitions or ()}

    def size(field: FieldNode) -> int:
        arg_name, default = LIST_SIZES[field.name.value]
        if arg_name is None:
            return default
        for arg in field.arguments or ():
            if arg.name.value == arg_name:
                value = arg.value
                if isinstance(value, VariableNode):
                    value = defaults.get(value.name.value)  # type: ignore[assignment]
                    if value is None:
                        return MAX_PAGE
                return int(value.value) if isinstance(value, IntValueNode) else MAX_PAGE
        return default

    def cost(selections: SelectionSetNode | None, seen: frozenset[str]) -> int:
        total = 0
        for sel in selections.selections if selections is not None else ():
            if isinstance(sel, FieldNode):
                inner = cost(sel.selection_set, seen)
                total += size(sel) * max(1, inner) if sel.name.value in LIST_SIZES else inner
            elif isinstance(sel, InlineFragmentNode):
                total += cost(sel.selection_set, seen)
            elif isinstance(sel, FragmentSpreadNode) and sel.name.value not in seen:
                frag = fragments.get(sel.name.value)
                if frag is not None:
                    total += cost(frag.selection_set, seen | {sel.name.value})
        return total

    return cost(operation.selection_set, frozenset())


def cost_rule(max_cost: int) -> type[ValidationRule]:
    class MaxCost(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            fragments = {f.name.value: f for f in self.context.document.definitions
                         if isinstance(f, FragmentDefinitionNode)}
            total = query_cost(node, fragments)
            if total > max_cost:
                self.report_error(GraphQLError(
                    f"query cost {total:,} is over the limit of {max_cost:,} (RACEWIRE_GRAPHQL_MAX_COST): it may "
                    "return that many rows; ask for smaller pages (first) or fewer nested lists", node))

    return MaxCost


class _Router(GraphQLRouter[Any, Any]):
    """A request the server refuses before running it (parse or validation errors: no ``data``, errors
    without a ``path``) is a 400, as GraphQL over HTTP asks; errors while resolving stay 200."""

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        response = super().create_response(response_data, sub_response)
        if isinstance(response_data, dict) and response_data.get("data") is None and response_data.get("errors") \
                and not any(e.get("path") for e in response_data["errors"]):
            response.status_code = 400
        return response


class _Schema(strawberry.Schema):
    """Documents refused before they run (parse and validation errors, no ``path``) are the client's
    mistake: one short INFO line, without the document (a 2,000-token query must not become a 2,000-line
    ERROR). Errors while resolving are logged by strawberry as before."""

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        refused = [e for e in errors if not e.path]
        for error in refused:
            log.info("GraphQL request refused: %s", error.message.splitlines()[0][:200])
        super().process_errors([e for e in errors if e.path], execution_context)


def router_for(settings: Settings) -> GraphQLRouter[Any, Any]:
    """The ``/graphql`` router with the configured limits on depth, aliases, tokens and cost."""
    s = settings
    schema = _Schema(query=Query, extensions=[  # factories: a fresh extension per request
        lambda: QueryDepthLimiter(max_depth=s.graphql_max_depth),
        lambda: MaxAliasesLimiter(max_alias_count=s.graphql_max_aliases),
        lambda: MaxTokensLimiter(max_token_count=s.graphql_max_tokens),
        lambda: AddValidationRules([cost_rule(s.graphql_max_cost)]),
    ])
    return _Router(schema, path="/graphql", tags=["graphql"], dependencies=[RateLimited])
