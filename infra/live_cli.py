"""``racewire live``: follow the live-timing service as a session happens: its records go to the
input topics as soon as each is final, and a capture of it is kept.

    racewire live --record captures/sprint.txt --until-finished
    racewire live --url http://127.0.0.1:8765 --record /tmp/rehearsal.txt   # against racewire feed-server
    racewire live --no-produce --record sprint.txt                          # only the capture
    racewire live --record q.txt --until-finished --output-json q.json      # and the report at the end

Records go to the configured broker and registry (``RACEWIRE_KAFKA_BOOTSTRAP``,
``RACEWIRE_SCHEMA_REGISTRY_URL``: what ``racewire up --no-race`` runs, or ``--bootstrap`` /
``--registry-url``) through :class:`~simulator.sources.live.LiveRecords`: the same conversion as
``racewire livetiming`` on the capture, so both give the same records and event ids.
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
import sys
import time
from pathlib import Path
from typing import Any

from simulator.sources.base import default_race_id
from simulator.sources.options import add_kafka_arguments, embedded, kafka_target

log = logging.getLogger("racewire.live")

PROGRESS_EVERY_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None,
                        help="base URL of the service (default RACEWIRE_FEED_URL: the official one)")
    parser.add_argument("--record", type=Path, required=True, help="capture file to append every message to")
    parser.add_argument("--race-id", default=None, help="race id of the records (default live-<meeting>-<session>)")
    parser.add_argument("--until-finished", action="store_true", help="exit once the session is final")
    parser.add_argument("--no-token", action="store_true", help="do not present RACEWIRE_F1TV_TOKEN")
    parser.add_argument("--no-produce", action="store_true", help="keep the capture only; produce nothing")
    parser.add_argument("--output-json", type=Path, default=None,
                        help="when the feed ends, wait until the dataflow applied every record produced and write "
                             "the report `racewire livetiming --output-json` writes (read back from Redis)")
    parser.add_argument("--redis-url", default=None,
                        help="the dataflow's Redis, for --output-json (default RACEWIRE_REDIS_URL)")
    parser.add_argument("--report-timeout", type=float, default=300.0,
                        help="seconds to wait for the dataflow before --output-json gives up (default 300)")
    add_kafka_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from dataflows.connectors.producer import ProducerOptions
    from schemas.codec import Codec, make_registry_client
    from schemas.settings import load_settings
    from simulator.sources.feed import INIT, RecordingWriter
    from simulator.sources.live import LiveFeed, LiveRecords

    settings = load_settings()
    redis_url = args.redis_url or settings.redis_url
    if not redis_url and embedded("127.0.0.1", settings.redis_port):  # racewire up --no-race's
        redis_url = f"redis://127.0.0.1:{settings.redis_port}/0"
    if args.output_json is not None and (args.no_produce or not redis_url):
        print("racewire live: --output-json needs the records produced (no --no-produce) and the dataflow's "
              "Redis (--redis-url or RACEWIRE_REDIS_URL)", file=sys.stderr)
        return 2
    url = args.url or settings.feed_url
    token = None if args.no_token else (settings.f1tv_token.get_secret_value() or None)
    producing: LiveRecords | None = None
    writer = RecordingWriter(args.record)
    race_id: list[str] = [args.race_id] if args.race_id else []

    def on_message(ns: int, topic: str, data: Any) -> None:
        writer.write(ns, topic, data)
        if producing is None:
            return
        if not race_id:  # named after the session, from the first snapshot
            race_id.append(_race_id(data if topic == INIT else {}))
            producing.start(race_id[0])
        producing.push(ns, topic, data)

    if not args.no_produce:
        target = kafka_target(args, "live")
        if target is None:
            return 2
        bootstrap, registry_url, _ = target
        producing = LiveRecords({"bootstrap.servers": bootstrap}, Codec(make_registry_client(registry_url)),
                                ProducerOptions.from_settings(settings))
        if race_id:
            producing.start(race_id[0])
    feed = LiveFeed(url, on_message, token=token, until_finished=args.until_finished)
    log.info("following the live-timing feed: %s", {"url": url, "record": str(args.record),
                                                    "token": token is not None, "produce": producing is not None})

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
        counts = producing.close(finished=feed.stats.finished) if producing is not None else {}
    log.info("live feed stopped: %s", {**_progress_fields(feed, 0, started, writer.lines),
                                       "race_id": race_id[0] if race_id else None, "produced": counts})
    if args.output_json is not None and race_id and redis_url:
        return _write_report(redis_url, race_id[0], sum(counts.values()), args.output_json, args.report_timeout)
    return 0


def _write_report(redis_url: str, race_id: str, records: int, path: Path, timeout_s: float) -> int:
    """Wait for the dataflow to apply the ``records`` produced, then the report from Redis."""
    import json

    import redis

    from infra.pipeline_run import wait_final
    from schemas.redis_layout import session_key
    from simulator.report import build_report, read_redis, write_report

    client = redis.Redis.from_url(redis_url)
    try:
        wait_final(client, race_id, records, None, timeout_s)
        raw = client.get(session_key(race_id))
        drivers = json.loads(raw).get("drivers", []) if raw else []
        report = build_report(race_id, {d["number"]: d["code"] for d in drivers}, *read_redis(client, race_id))
    except TimeoutError as exc:
        print(f"racewire live: {exc}; no report written", file=sys.stderr)
        return 1
    finally:
        client.close()
    write_report(report, path)
    print(json.dumps({"race_id": race_id, "session_type": report["session_type"],
                      "order": [c["driver"] for c in report["classification"]], "fastest_lap": report["fastest_lap"],
                      "output_json": str(path)}))
    return 0


def _race_id(snapshot: dict[str, Any]) -> str:
    """``live-<meeting>-<session>`` from a subscription's ``SessionInfo``."""
    info: dict[str, Any] = snapshot["SessionInfo"] if isinstance(snapshot.get("SessionInfo"), dict) else {}
    meeting: dict[str, Any] = info["Meeting"] if isinstance(info.get("Meeting"), dict) else {}
    parts = [str(x) for x in (meeting.get("Name"), str(info.get("StartDate", ""))[:4], info.get("Name")) if x]
    return default_race_id("live", *(parts or ["session"]))


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
