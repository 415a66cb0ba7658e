"""A session followed live through the whole pipeline (issue 13): ``racewire feed-server`` plays the
2024 São Paulo sprint at 50x, ``racewire live`` turns it into records as it arrives and produces
them to the real (embedded) broker, the race dataflow runs on them into Redis; the same capture
read by ``racewire livetiming``'s conversion goes through the same flow under another race id.
Final classification, fastest lap and lap chart must be the same; the records ``live`` produced
must be those of its own recording read back, id for id; with the connection dropped twice. The
server withholds car data and positions from a client without a token, as the public service
does, and ``live`` presents none.

The recording has no ``LapCount`` (the service sends it from the start of a session): it is put
in the first snapshot, so that records go while the session runs rather than at its end."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from infra.flow_cli import flow_process
from schemas.codec import Codec, make_registry_client
from schemas.model import Control, Lap, Session, Weather
from schemas.redis_layout import state_key
from simulator.report import build_report, read_redis
from simulator.sources.base import codes_of
from simulator.sources.incremental import convert_incrementally, load_capture
from simulator.sources.livetiming import read_capture
from simulator.sources.produce import produce_race
from tests.integration.test_live_feed import _live, feed_server  # noqa: F401 (a fixture)
from tests.integration.test_race_pipeline import _consume

SPEED = 50
FINAL_TIMEOUT_S = 240


def _with_distance(source: Path, target: Path, total: int) -> Path:
    lines = source.read_text(encoding="utf-8-sig").splitlines()
    ns, _topic, text = lines[0].split(":", 2)
    init = json.loads(text)
    init["LapCount"] = {"CurrentLap": 1, "TotalLaps": total}
    target.write_text("\n".join([f"{ns}:init:{json.dumps(init)}", *lines[1:]]) + "\n", encoding="utf-8")
    return target


def _wait_final(client: redis.Redis, race_ids: list[str], proc: Any) -> None:
    deadline = time.monotonic() + FINAL_TIMEOUT_S
    while time.monotonic() < deadline:
        docs = [client.get(state_key(r)) for r in race_ids]
        if all(d is not None and json.loads(d).get("final") for d in docs):
            time.sleep(3)  # the settler's last events
            return
        assert proc.poll() is None, f"the dataflow exited with {proc.returncode}"
        time.sleep(0.5)
    raise AssertionError(f"not final in {FINAL_TIMEOUT_S} s: {race_ids}")


def _result(client: redis.Redis, race_id: str, codes: dict[int, str]) -> dict[str, Any]:
    report = build_report(race_id, codes, *read_redis(client, race_id))
    return {k: report[k] for k in ("laps", "classification", "fastest_lap", "last_lap_hero", "pit_stops")}


@pytest.mark.acceptance
@pytest.mark.parametrize("drops", [(), (1200.0, 2100.0)], ids=["connected", "dropped-twice"])
def test_a_session_followed_live_ends_as_the_capture_read_whole(
        shared_data: Path, tmp_path: Path, feed_server: Any, kafka_bootstrap: str, redis_url: str,  # noqa: F811
        registry_url: str, drops: tuple[float, ...]) -> None:
    capture = _with_distance(shared_data / "livetiming" / "recordings" / "2024_brazil_sprint.txt",
                             tmp_path / "brazil.txt", total=24)
    live_id, whole_id = f"live-{uuid.uuid4().hex[:8]}", f"whole-{uuid.uuid4().hex[:8]}"
    record = tmp_path / "live.txt"
    codec = Codec(make_registry_client(registry_url))
    codec.register_all()
    client = redis.Redis.from_url(redis_url)
    options = [a for s in drops for a in ("--drop-at", str(s))]
    # the public feed: car data and positions only for a token, and this client presents none
    options += ["--withhold-z", "--token", "a-subscriber's-jwt"]
    env = {"RACEWIRE_KAFKA_BOOTSTRAP": kafka_bootstrap, "RACEWIRE_SCHEMA_REGISTRY_URL": registry_url,
           "RACEWIRE_DATA_DIR": str(tmp_path / "data"), "RACEWIRE_F1TV_TOKEN": ""}
    with flow_process(kafka_bootstrap, redis_url, registry_url, strategy=False) as proc:
        port = feed_server(capture, "--speed", str(SPEED), *options)
        # connected: also the report at the end, as `racewire livetiming --output-json` writes it
        report = tmp_path / "live.json"
        extra = () if drops else ("--output-json", str(report), "--redis-url", redis_url)
        out = _live(port, record, timeout=200, env=env, produce=True, race_id=live_id, extra=extra)
        assert f"'reconnects': {len(drops)}," in "\n".join(out.splitlines()[-3:]), out[-1500:]
        whole = load_capture(capture, whole_id)
        produce_race(whole, {"bootstrap.servers": kafka_bootstrap}, codec, None)
        _wait_final(client, [live_id, whole_id], proc)

    codes = codes_of(whole.session)
    live, read_whole = _result(client, live_id, codes), _result(client, whole_id, codes)
    assert live["classification"] and len(live["laps"]) == 24
    assert live == read_whole
    if not drops:
        written = json.loads(report.read_text(encoding="utf-8"))
        assert written["session_type"] == "SPRINT"
        assert {k: written[k] for k in live} == live

    # the records live produced are its recording's, read back by racewire livetiming, id for id
    produced: dict[str, Any] = {}
    for topic in ("f1.race.session", "f1.timing.lap", "f1.race.control", "f1.weather"):
        for r in _consume(kafka_bootstrap, topic, codec, lambda r: r.race_id == live_id):
            assert r.event_id not in produced, f"{r.event_id} produced twice"
            produced[r.event_id] = r
    replayed = {r.event_id: r for r in convert_incrementally(read_capture(record), live_id)}
    assert produced.keys() == replayed.keys()
    assert all(produced[k] == replayed[k] for k in replayed), [
        k for k in replayed if produced[k] != replayed[k]][:5]
    assert sum(isinstance(r, Lap) for r in produced.values()) == len(whole.laps)
    assert sum(isinstance(r, Session) for r in produced.values()) == 1
    assert any(isinstance(r, Control) and r.kind.name == "LAP_DELETED" for r in produced.values())
    assert sum(isinstance(r, Weather) for r in produced.values()) > 10
