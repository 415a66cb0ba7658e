"""``GET /api/races/{id}/stream``: Server-Sent Events with resume."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Header, HTTPException, Query, Request
from sse_starlette import EventSourceResponse

from serving.deps import HubDep, MetricsDep, RaceId, RateLimited
from serving.sse import client_stream, parse_last_event_id

router = APIRouter(prefix="/races", tags=["stream"])

SHUTDOWN_GRACE_S = 3.0

DESCRIPTION = """\
A `text/event-stream` of the race. The first message is a `leaderboard` event with the current
snapshot; then `event` (race events), `commentary` and `leaderboard` events as they happen.
Keep-alive pings are SSE comments.

With `?delta=1` a live leaderboard goes out as a `leaderboard-delta` event whenever the client holds
the version it is based on (`base`): changed top-level fields, `rows` (changed fields by driver
number), `order` (driver numbers, when the order changed) and changed `positions`. About a tenth of
the size of a full snapshot; the web page uses it.

Every message has an id. `event`/`commentary` ids are the Redis stream ids of
`race:{id}:events`; a `leaderboard` id is `<last event id>.v<version>`. Reconnect with the
`Last-Event-ID` header (browsers do it by themselves) or `?after=<id>` to receive exactly the events
after that id, in order and without duplicates, then the current leaderboard, then live messages.

Example: `curl -N http://127.0.0.1:8000/api/races/sim-1/stream`
"""


@router.get("/{race_id}/stream", tags=["stream"], summary="Live updates (SSE) with resume",
            description=DESCRIPTION, dependencies=[RateLimited],
            responses={200: {"content": {"text/event-stream": {}}, "description": "the event stream"}})
async def stream(request: Request, race_id: RaceId, hub: HubDep, metrics: MetricsDep,
                 last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
                 after: Annotated[str | None, Query(description="start after this id when no Last-Event-ID")] = None,
                 delta: Annotated[bool, Query(description="send live leaderboards as `leaderboard-delta` events "
                                                          "(changes against the previous version) when possible")
                                  ] = False,
                 ) -> EventSourceResponse:
    cursor = last_event_id or after
    if cursor:
        try:
            parse_last_event_id(cursor)
        except ValueError as exc:
            field = "Last-Event-ID" if last_event_id else "after"
            raise HTTPException(422,
                                detail=[{"loc": ["header" if last_event_id else "query", field],
                                         "msg": str(exc), "type": "value_error"}]) from None
    opts = request.app.state.options

    async def body():  # type: ignore[no-untyped-def]
        metrics.sse_clients.inc()
        metrics.sse_connections.inc()
        metrics.sse_channels.set(len(hub.channels) + (0 if race_id in hub.channels else 1))
        try:
            async for chunk in client_stream(hub, race_id, cursor, on_resync=metrics.sse_resyncs.inc, delta=delta):
                yield chunk
        finally:
            metrics.sse_clients.dec()
            metrics.sse_channels.set(len(hub.channels))

    # on server shutdown serving.app.Server closes the hub, which ends every stream; the grace period
    # lets them end by themselves (with a complete response) before sse-starlette cancels them
    return EventSourceResponse(body(), ping=opts.sse_ping_s, send_timeout=opts.sse_send_timeout_s,
                               shutdown_event=anyio.Event(), shutdown_grace_period=SHUTDOWN_GRACE_S,
                               headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
