"""``racewire live``: follow the live-timing service as a session happens, keeping a capture.

    racewire live --record captures/sprint.txt --until-finished
    racewire live --url http://127.0.0.1:8765 --record /tmp/rehearsal.txt   # against racewire feed-server

Every message is appended to the capture as it arrives (flushed at once, synced every second), in
the recording format ``racewire livetiming`` and ``racewire feed-server`` read. A drop is followed by
a new connection with backoff; its subscription snapshot is recorded as an ``init`` line and taken as
the truth across the gap. The console shows the session, lap, messages per second, the last
message's age and the reconnections every few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("racewire.live")

PROGRESS_EVERY_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None,
                        help="base URL of the service (default RACEWIRE_FEED_URL: the official one)")
    parser.add_argument("--record", type=Path, required=True, help="capture file to append every message to")
    parser.add_argument("--until-finished", action="store_true", help="exit once the session is final")
    parser.add_argument("--no-token", action="store_true", help="do not present RACEWIRE_F1TV_TOKEN")


def run(args: argparse.Namespace) -> int:
    from schemas.settings import load_settings
    from simulator.sources.feed import RecordingWriter
    from simulator.sources.live import LiveFeed

    settings = load_settings()
    url = args.url or settings.feed_url
    token = None if args.no_token else (settings.f1tv_token.get_secret_value() or None)
    writer = RecordingWriter(args.record)
    feed = LiveFeed(url, writer.write, token=token, until_finished=args.until_finished)
    log.info("following the live-timing feed: %s", {"url": url, "record": str(args.record),
                                                    "token": token is not None})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, feed.stop.set)
        progress = asyncio.create_task(_progress(feed))
        try:
            await feed.run()
        finally:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress

    started = time.monotonic()
    try:
        asyncio.run(main())
    finally:
        writer.close()
    log.info("live feed stopped: %s", _progress_fields(feed, 0, started, writer.lines))
    return 0


def _progress_fields(feed: Any, before: int, since: float, lines: int | None = None) -> dict[str, Any]:
    stats = feed.stats
    now = time.monotonic()
    age = None if stats.last_arrival_ns is None else round((time.time_ns() - stats.last_arrival_ns) / 1e9, 1)
    fields = {"session": stats.session, "status": stats.session_status, "lap": stats.lap, "messages": stats.messages,
              "messages_per_s": round((stats.messages - before) / max(now - since, 1e-9), 1),
              "last_message_age_s": age, "reconnects": stats.reconnects}
    if lines is not None:
        fields["recorded_lines"] = lines
    return fields


async def _progress(feed: Any) -> None:
    before, since = 0, time.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        log.info("live: %s", _progress_fields(feed, before, since))
        before, since = feed.stats.messages, time.monotonic()
