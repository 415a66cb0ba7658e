"""``GET /api/races/{id}/stream``: Server-Sent Events with resume."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, HTTPException, Query, Request
from sse_starlette import EventSourceResponse

from serving.deps import HubDep, MetricsDep, RaceId, RateLimited
from serving.sse import StreamHooks, client_stream, parse_last_event_id

router = APIRouter(prefix="/races", tags=["stream"])


class FanoutResponse(EventSourceResponse):
    """An EventSourceResponse for a body of ready-made SSE bytes, sent without a timeout scope per chunk.

    sse-starlette wraps every send in an anyio cancel scope (``send_timeout``), a large share of the
    per-message cost when one message goes to thousands of clients. Here a client that stops reading
    only blocks its own stream (uvicorn's flow control); its queue then overflows and it is
    resynchronised, and its pings still time out after ``send_timeout``, which ends the response.
    Pings, disconnect handling and shutdown stay sse-starlette's."""

    async def _stream_response(self, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except BaseException:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.move_on_after(CLEANUP_TIMEOUT_S, shield=True):
                    await aclose()
            raise
        async with self._send_lock:
            self.active = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})

SHUTDOWN_GRACE_S = 3.0
CLEANUP_TIMEOUT_S = 5.0

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

    def opened() -> None:
        metrics.sse_clients.inc()
        metrics.sse_connections.inc()
        metrics.sse_channels.set(len(hub.channels))

    def closed() -> None:
        metrics.sse_clients.dec()
        metrics.sse_channels.set(len(hub.channels))

    hooks = StreamHooks(on_open=opened, on_close=closed, on_resync=metrics.sse_resyncs.inc,
                        on_lag=metrics.sse_lag.observe)
    body = client_stream(hub, race_id, cursor, delta=delta, hooks=hooks)

    # on server shutdown serving.app.Server closes the hub, which ends every stream; the grace period
    # lets them end by themselves (with a complete response) before sse-starlette cancels them
    return FanoutResponse(body, ping=opts.sse_ping_s, send_timeout=opts.sse_send_timeout_s,
                               shutdown_event=anyio.Event(), shutdown_grace_period=SHUTDOWN_GRACE_S,
                               headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
