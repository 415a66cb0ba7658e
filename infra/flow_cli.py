"""``racewire flow race``: run the race dataflow against Kafka, Redis and the schema registry.

``--workers N`` runs N Bytewax worker processes (a cluster on this machine; each reads its share
of the input partitions), so the work is not limited by one interpreter lock. ``--threads``
runs N workers as threads of one process instead.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("racewire.flow")

FLOWS = ("race",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=FLOWS, help="which dataflow")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default RACEWIRE_WORKERS or 1)")
    parser.add_argument("--threads", action="store_true", help="run the workers as threads of one process")
    parser.add_argument("--bootstrap", default=None, help="Kafka bootstrap (default RACEWIRE_KAFKA_BOOTSTRAP)")
    parser.add_argument("--redis-url", default=None, help="Redis URL (default RACEWIRE_REDIS_URL)")
    parser.add_argument("--registry-url", default=None,
                        help="schema registry URL (default RACEWIRE_SCHEMA_REGISTRY_URL)")
    parser.add_argument("--max-rate", type=float, default=None,
                        help="most telemetry-driven leaderboard snapshots per second per race")
    parser.add_argument("--no-redis", action="store_true", help="write only to the Kafka output topics")
    parser.add_argument("--no-strategy", action="store_true",
                        help="no strategy calls (default: RACEWIRE_STRATEGY, on)")
    parser.add_argument("--recovery-dir", default=None, help="enable Bytewax recovery with this directory")
    parser.add_argument("--addresses", default=None,
                        help="host:port of every process of a multi-machine cluster, ';'-separated "
                             "(env RACEWIRE_FLOW_ADDRESSES; e.g. the pods of a StatefulSet)")
    parser.add_argument("--process-id", type=int, default=None,
                        help="this process's index in --addresses (default: the ordinal at the end of "
                             "the host name, as in a StatefulSet pod 'racewire-flow-2')")


def _config(args: argparse.Namespace) -> dict[str, Any]:
    from schemas.settings import load_settings

    s = load_settings(kafka_bootstrap=args.bootstrap, redis_url=args.redis_url,
                      schema_registry_url=args.registry_url, workers=args.workers,
                      leaderboard_max_rate_hz=args.max_rate)
    missing = [name for name, value in (("RACEWIRE_KAFKA_BOOTSTRAP (--bootstrap)", s.kafka_bootstrap),
                                        ("RACEWIRE_SCHEMA_REGISTRY_URL (--registry-url)", s.schema_registry_url),
                                        ("RACEWIRE_REDIS_URL (--redis-url)", s.redis_url or args.no_redis))
               if not value]
    if missing:
        raise SystemExit(f"racewire flow: set {', '.join(missing)}, or use `racewire up` to start everything")
    return {"settings": s}


def build(args: argparse.Namespace) -> Any:
    from dataflows.connectors.kafka import make_source
    from dataflows.connectors.redis_sink import RedisSink
    from dataflows.race_flow import RaceSinks, build_race_flow
    from schemas.codec import Codec, make_registry_client

    s = _config(args)["settings"]
    from dataflows.connectors.kafka_sink import KafkaOutputSink
    from dataflows.connectors.producer import ProducerOptions

    url = s.schema_registry_url

    def codec_factory() -> Codec:
        return Codec(make_registry_client(url))

    from dataflows.connectors.retry import RetryPolicy

    retry = RetryPolicy(max_backoff_s=s.sink_retry_max_backoff_s, give_up_after_s=s.sink_give_up_after_s)
    pg = None
    if s.database_url:
        from dataflows.connectors.pg_sink import PgSink
        from infra.migrate import migrate

        migrate(s.database_url)
        pg = PgSink(s.database_url, retry)
    sinks = RaceSinks(
        kafka=KafkaOutputSink(s.kafka_bootstrap, ProducerOptions.from_settings(s)),  # survives broker restarts
        redis=None if args.no_redis else RedisSink(s.redis_url, s.events_stream_maxlen, retry, s.database_url),
        pg=pg,
    )
    strategy = s.strategy and not args.no_strategy
    models = None
    if strategy:  # load the models and compile the simulation before the first lap needs them
        from strategy.calls import warm_up
        from strategy.models import load_models

        models = load_models(s.models_dir)
        seconds = warm_up(models)
        log.info("strategy ready: %s", {"models": models.version, "seconds": round(seconds, 1)})
    source = make_source(s.kafka_bootstrap, recovery_hint=f"--recovery-dir {args.recovery_dir}",
                         fetch_wait_ms=s.kafka_fetch_wait_ms)
    return build_race_flow(source, sinks, codec_factory, s.leaderboard_max_rate_hz, strategy=strategy,
                           models=models)


def _recovery(args: argparse.Namespace, workers: int) -> Any:
    """Bytewax recovery in ``--recovery-dir``: state snapshots in SQLite partitions, created on
    first use (one per worker). On a restart the flow resumes from its last snapshot; output since
    then is written again, which the sinks absorb (Redis writes are idempotent; Kafka consumers
    de-duplicate by event id)."""
    if not args.recovery_dir:
        return None
    from pathlib import Path

    from bytewax.recovery import RecoveryConfig, init_db_dir

    path = Path(args.recovery_dir)
    if not any(path.glob("*.sqlite3")):
        path.mkdir(parents=True, exist_ok=True)
        init_db_dir(path, max(1, workers))
        log.info("recovery partitions created: %s", {"dir": str(path), "partitions": workers})
    return RecoveryConfig(path)


def run(args: argparse.Namespace) -> int:
    from bytewax._bytewax import cli_main

    s = _config(args)["settings"]
    workers = s.workers
    args.addresses = args.addresses or s.flow_addresses
    if args.addresses is not None and args.process_id is None:
        args.process_id = _ordinal(socket.gethostname())
    if args.addresses is not None or args.threads or workers == 1:
        flow = build(args)
        # everything loaded so far (~60,000 GC-tracked objects; ~190,000 with the strategy models
        # and Numba) lives as long as the process: keep it out of the cyclic GC, or every full
        # collection walks it all. Measured (bench pipeline, 4 races, medians of three runs): with
        # strategy 25.4 s before, 17.9 s after; without 19.1 s before, 16.8 s after.
        gc.freeze()
        procs = args.addresses.split(";") if args.addresses else None
        local_workers = workers if args.threads else 1
        log.info("race dataflow starting: %s", {"workers": local_workers, "process": args.process_id})
        _report(s, args.process_id or 0, local_workers)
        try:
            cli_main(flow, workers_per_process=local_workers,
                     process_id=args.process_id, addresses=procs, recovery_config=_recovery(args, workers))
        except Exception as exc:
            mismatch = _recovery_mismatch(exc)
            if mismatch is None:
                raise
            log.error("recovery state refused: %s", {"reason": mismatch})
            print(f"racewire flow: {mismatch}", file=sys.stderr)
            return RECOVERY_MISMATCH_EXIT
        return 0
    return _run_cluster(args, workers)


#: exit status of a flow that refused its recovery state (it does not fit the topics)
RECOVERY_MISMATCH_EXIT = 3


def _recovery_mismatch(exc: BaseException) -> str | None:
    """The message of a :class:`RecoveryMismatch` (a snapshot that does not fit the topics) or a
    :class:`SnapshotMismatch` (a snapshot of another racewire version) behind ``exc`` (Bytewax wraps
    what a source or a state raises while it is resumed), or None."""
    from dataflows.connectors.kafka_source import RecoveryMismatch
    from dataflows.race.processor import SnapshotMismatch

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (RecoveryMismatch, SnapshotMismatch)):
            return str(seen)
        text = str(seen)
        for marker in ("RecoveryMismatch: ", "SnapshotMismatch: "):
            if marker in text:
                return text.split(marker, 1)[1].strip().splitlines()[0]
        seen = seen.__cause__ or seen.__context__
    return None


def _report(s: Any, process: int, workers: int) -> None:
    """Publish this process's status document to Redis and serve its Prometheus metrics."""
    from dataflows.metrics import StatusPublisher, serve_metrics

    if s.redis_url:
        StatusPublisher(s.redis_url, process, workers).start()
    serve_metrics(None if s.flow_metrics_port is None else s.flow_metrics_port + process)


def _ordinal(hostname: str) -> int:
    """The ordinal of a StatefulSet pod name: ``racewire-flow-2`` → 2."""
    tail = hostname.rsplit("-", 1)[-1]
    if not tail.isdigit():
        raise SystemExit(f"racewire flow: cannot tell this process's index from host name {hostname!r}; "
                         "pass --process-id")
    return int(tail)


def _run_cluster(args: argparse.Namespace, workers: int) -> int:
    """Spawn ``workers`` processes that form one Bytewax cluster; stop them together."""
    from infra.services import free_ports

    _recovery(args, workers)  # create the partitions once, before the processes start
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(workers))
    base = [sys.executable, "-m", "infra.cli", "flow", "race", "--workers", str(workers),
            "--addresses", addresses]
    for flag, value in (("--bootstrap", args.bootstrap), ("--redis-url", args.redis_url),
                        ("--registry-url", args.registry_url), ("--max-rate", args.max_rate),
                        ("--recovery-dir", args.recovery_dir)):
        if value is not None:
            base += [flag, str(value)]
    for flag in ("no_redis", "no_strategy"):
        if getattr(args, flag, False):
            base.append("--" + flag.replace("_", "-"))
    children = [subprocess.Popen([*base, "--process-id", str(i)], env=os.environ.copy())
                for i in range(workers)]
    log.info("race dataflow cluster: %d processes at %s", workers, addresses)

    def stop(signum: int, _frame: Any) -> None:
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    codes = [c.wait() for c in children]
    return max(codes, default=0)


@contextlib.contextmanager
def flow_process(bootstrap: str, redis_url: str, registry_url: str, workers: int = 1,
                 database_url: str | None = None, log_level: str = "WARNING", strategy: bool = True,
                 ) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``racewire flow race`` as a child process against these services (history only when
    ``database_url`` is given, strategy calls unless ``strategy`` is False); on exit stop it and
    every process it started."""
    import psutil

    env = {**os.environ, "RACEWIRE_KAFKA_BOOTSTRAP": bootstrap, "RACEWIRE_REDIS_URL": redis_url,
           "RACEWIRE_SCHEMA_REGISTRY_URL": registry_url}
    env.pop("RACEWIRE_DATABASE_URL", None)
    if database_url is not None:
        env["RACEWIRE_DATABASE_URL"] = database_url
    command = [sys.executable, "-m", "infra.cli", "--log-level", log_level, "flow", "race", "--workers", str(workers)]
    proc = subprocess.Popen(command if strategy else [*command, "--no-strategy"], env=env)
    try:
        yield proc
    finally:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.terminate()
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
