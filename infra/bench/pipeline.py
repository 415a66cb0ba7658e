"""``racewire bench pipeline``: end-to-end throughput of the race dataflow.

``racewire bench pipeline --races N --json`` simulates N races, produces them to the broker at
max speed, then measures in the same run:

- ``ceiling_events_per_s``: a plain consumer reading every input message and Avro-decoding it;
- ``events_per_s``: the race dataflow (``--workers`` processes) from its first output to the
  moment every race's state in Redis reflects every input record (the state version counts the
  input records applied), i.e. end to end, input topic → Redis; ``flow_cpu_s``: the CPU seconds the
  flow process spent over the same interval (steadier than wall time on a shared machine: compare
  two builds by it as well).

With no ``RACEWIRE_KAFKA_BOOTSTRAP`` it starts an embedded broker of its own (so the topics
hold only this run's races); Redis is ``RACEWIRE_REDIS_URL``, a local one on 6379, or embedded.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psutil

log = logging.getLogger("racewire.bench")


def add_subcommands(sub: Any) -> None:
    p = sub.add_parser("pipeline", help="end-to-end throughput of the race dataflow")
    p.add_argument("--races", type=int, default=4)
    p.add_argument("--laps", type=int, default=50)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    p.add_argument("--strategy", choices=("on", "off", "compare"), default="on",
                   help="strategy calls in the flow: on, off, or compare (both runs on the same input)")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs of the flow per mode (compare alternates off/on); figures are medians")
    p.set_defaults(bench_func=lambda args: bench_pipeline(args.races, args.laps, args.workers, args.seed,
                                                          args.timeout, args.strategy, args.repeat))


def _ceiling(bootstrap: str, codec: Any, expected: int, timeout: float) -> tuple[int, float]:
    """Plain consume + Avro decode of every input message: (messages, seconds)."""
    from confluent_kafka import Consumer, TopicPartition

    from dataflows.connectors.kafka import CONSUMER_TUNING
    from schemas.codec import INPUT_TOPICS

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, **CONSUMER_TUNING})
    md = consumer.list_topics(timeout=10)
    parts = [TopicPartition(t, p, 0) for t in INPUT_TOPICS for p in md.topics[t].partitions]
    consumer.assign(parts)
    n = 0
    decode = codec.decode
    start = time.perf_counter()
    deadline = start + timeout
    while n < expected and time.perf_counter() < deadline:
        for msg in consumer.consume(5000, 0.05):
            if msg.error() is None:
                decode(msg.value())
                n += 1
    seconds = time.perf_counter() - start
    consumer.close()
    return n, seconds


def bench_pipeline(races: int, laps: int, workers: int, seed: int, timeout: float, strategy: str = "on",
                   repeat: int = 1) -> dict[str, Any]:
    """``strategy``: \"on\" (calls every lap), \"off\", or \"compare\" (both, alternating).

    ``repeat``: runs per mode over the same input; each figure is the median over them (on a small
    shared machine one run can be 20% off its neighbour), and ``runs_s`` lists every run."""
    import redis

    from infra.topics import create_topics
    from schemas.codec import Codec, make_registry_client
    from schemas.redis_layout import race_keys_pattern
    from simulator.sources.produce import produce_many
    from simulator.sources.synthetic import SyntheticRace

    tag = uuid.uuid4().hex[:6]
    from infra.bench.harness import services

    with tempfile.TemporaryDirectory(prefix="racewire-bench-") as tmp, services(Path(tmp)) as svc:
        create_topics(svc["bootstrap"], partitions=max(4, workers * 2))
        codec = Codec(make_registry_client(svc["registry_url"]))
        codec.register_all()
        sims = [SyntheticRace(f"bench-{tag}-{i}", seed + i, laps) for i in range(races)]
        t0 = time.perf_counter()
        per_race: dict[str, int] = {}

        def count(record: Any) -> None:
            per_race[record.race_id] = per_race.get(record.race_id, 0) + 1

        produce_many(sims, {"bootstrap.servers": svc["bootstrap"]}, codec, speed=None, on_record=count)
        produce_s = time.perf_counter() - t0
        events = sum(per_race.values())
        log.info("produced %d events in %.1f s", events, produce_s)

        ceiling_n, ceiling_s = _ceiling(svc["bootstrap"], codec, events, timeout)

        client = redis.Redis.from_url(svc["redis_url"])
        expected: dict[str, int | None] = {sim.race_id: per_race.get(sim.race_id) for sim in sims}
        ceiling = ceiling_n / ceiling_s if ceiling_s else 0.0
        common = {"benchmark": "pipeline", "races": races, "laps": laps, "workers": workers, "events": events,
                  "ceiling_events_per_s": round(ceiling), "produce_s": round(produce_s, 2), "cpus": os.cpu_count()}
        modes = [False, True] if strategy == "compare" else [strategy == "on"]
        done: dict[bool, list[dict[str, Any]]] = {on: [] for on in modes}
        for _ in range(max(1, repeat)):
            for on in modes:
                for race_id in expected:  # each run starts from empty race state (the topics are re-read)
                    for key in client.scan_iter(race_keys_pattern(race_id)):
                        client.delete(key)
                done[on].append(_run_flow(svc, client, expected, workers, on, timeout))
        runs = {}
        for on, results in done.items():
            run = {k: statistics.median(r[k] for r in results)
                   for k in ("seconds", "startup_s", "peak_rss_mb", "flow_cpu_s")}
            run["flow_cpu_runs_s"] = [r["flow_cpu_s"] for r in results]
            if on:
                run["calls_last_lap"] = min(r["calls_last_lap"] for r in results)
            run["runs_s"] = [r["seconds"] for r in results]
            run["events_per_s"] = round(events / run["seconds"])
            run["events_per_s_per_worker"] = round(events / run["seconds"] / workers)
            run["ratio"] = round(events / run["seconds"] / ceiling, 3) if ceiling else None
            runs["with_strategy" if on else "without_strategy"] = run
        if len(runs) == 1:
            return {**common, "strategy": strategy == "on", **next(iter(runs.values()))}
        with_s, without = runs["with_strategy"], runs["without_strategy"]
        return {**common, **runs,
                "strategy_to_plain": round(with_s["events_per_s"] / without["events_per_s"], 3)}


def _run_flow(svc: dict[str, str], client: Any, expected: dict[str, int | None], workers: int, strategy: bool,
              timeout: float) -> dict[str, Any]:
    """Run the race flow over the produced races until Redis reflects every input record."""
    from dataflows.race.state import applied_of
    from infra.bench.harness import tree_peak_rss_mb
    from infra.flow_cli import flow_process
    from schemas.redis_layout import strategy_key, version_key
    from schemas.settings import load_settings

    spawn = time.perf_counter()
    with flow_process(svc["bootstrap"], svc["redis_url"], svc["registry_url"], workers,
                      load_settings().database_url, strategy=strategy) as proc:
        ps = psutil.Process(proc.pid)
        first: float | None = None
        done_at: float | None = None
        cpu_first = cpu_s = 0.0
        keys = [version_key(r) for r in expected]
        while time.perf_counter() - spawn < timeout:
            versions = client.mget(keys)
            now = time.perf_counter()
            if first is None and any(v is not None for v in versions):
                first = now
                cpu_first = sum(ps.cpu_times()[:2])
            if all(v is not None and applied_of(int(v)) >= (expected[r] or 1 << 62)
                   for r, v in zip(expected, versions, strict=True)):
                done_at = now
                cpu_s = sum(ps.cpu_times()[:2]) - cpu_first
                break
            if proc.poll() is not None:
                raise RuntimeError(f"dataflow exited with code {proc.returncode}")
            time.sleep(0.05)
        peak = tree_peak_rss_mb(ps)  # VmHWM: the high-water mark, no polling needed
        if done_at is None or first is None:
            raise RuntimeError(f"the dataflow did not finish {len(expected)} races within {timeout} s")
        out: dict[str, Any] = {"seconds": round(done_at - first, 3), "startup_s": round(first - spawn, 3),
                               "peak_rss_mb": peak, "flow_cpu_s": round(cpu_s, 2)}
        if strategy:  # every race has calls up to its last lap but one (the last call is after lap N-1)
            time.sleep(0.5)
            last = []
            for race_id in expected:
                calls = client.hvals(strategy_key(race_id))
                last.append(max((orjson.loads(c)["lap"] for c in calls), default=0))
            out["calls_last_lap"] = min(last)
        return out
