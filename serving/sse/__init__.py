"""Live fan-out: one Redis reader per race per process, many SSE clients.

See ``serving/ARCHITECTURE.md`` for the picture. Three modules: :mod:`~serving.sse.framing` (pure:
frames, ids, deltas, and the parser reading them back), :mod:`~serving.sse.hub` (the Redis readers
and the fan-out to every subscriber's queue), :mod:`~serving.sse.client` (one client's stream). In
short:

* :class:`Hub` (one per process) owns one :class:`~serving.sse.hub.RaceChannel` per race that has clients. A channel
  runs one task that ``XREAD BLOCK``\\s ``race:{id}:events`` and ``race:{id}:updates``, turns each
  entry into a :class:`~serving.sse.framing.Message` whose SSE frame is encoded once, and appends it to every
  subscriber's bounded queue without awaiting, so a slow client never slows the reader or the others.
* A subscriber whose queue overflows is marked; its stream resynchronises from Redis (replays what
  it missed after its cursor, then the current leaderboard) instead of holding the backlog.
* :func:`client_stream` is the body of one SSE response: it subscribes *before* reading Redis, replays
  the stream entries after the client's cursor, sends the current leaderboard, then relays live
  messages, dropping any it has already sent (ids compare as integers), so nothing is lost or sent twice.

SSE ids: an ``event``/``commentary`` message's id is its ``race:{id}:events`` entry id. A
``leaderboard`` message's id is ``<events cursor>.v<version>``: the last events-stream id the client
has been sent plus the snapshot version (entry ids of two different streams do not form one order,
so the events cursor is what resuming needs; the version avoids resending an unchanged snapshot).
"""

from serving.sse.client import StreamHooks, client_stream
from serving.sse.framing import parse_last_event_id
from serving.sse.hub import Hub

__all__ = ["Hub", "StreamHooks", "client_stream", "parse_last_event_id"]
