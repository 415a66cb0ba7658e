"""The drills: one simulated race through the real system, a fault, and a verdict.

Every drill runs the same race (same seed, same race id) with :class:`~infra.drills.stack.UpRun`
against services the drill owns (:class:`~infra.drills.stack.Stack`), applies its fault while
the race runs, waits until the system has settled, and compares the final Redis, PostgreSQL and
output-topic contents with those of an uninterrupted run of the same race (the *reference*, run
once and reused). See :data:`DRILLS` for what each drill does and how it judges recovery.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from infra.drills.compare import compare_contents
from infra.drills.contents import Contents, OutputTail, collect
from infra.drills.stack import Monitor, Sample, Stack, UpRun
from infra.services import free_ports

log = logging.getLogger("racewire.drill")


class DrillError(RuntimeError):
    """A drill could not be run at all (e.g. the uninterrupted reference run did not finish)."""


@dataclass(frozen=True)
class Scale:
    """How big a drill run is: the race, the length of outages, and how long to wait."""

    name: str
    laps: int
    speed: float
    outage_s: float  # how long a stopped service stays down
    settle_s: float  # the race is done once final and nothing has changed for this long
    stall_s: float  # after the race, give up waiting once nothing has changed for this long
    catchup_s: float  # after the race's expected end, wait at most this long
    startup_s: float  # allowance for `racewire up` to start (the flow loads its models)


SCALES: dict[str, Scale] = {
    # a few laps at high speed: each drill takes about a minute on a small machine
    "ci": Scale("ci", laps=8, speed=20, outage_s=6, settle_s=3, stall_s=30, catchup_s=60, startup_s=60),
    # a 30-lap race and real 20 s outages, for on-demand runs
    "full": Scale("full", laps=30, speed=20, outage_s=20, settle_s=5, stall_s=60, catchup_s=180, startup_s=90),
}

#: input partitions of every run but the long session (racewire's default)
PARTITIONS = 8
#: a long session: this many record batches at least in one partition
LONG_SESSION_BATCHES = 50_000
#: librdkafka settings that send every record in a batch of its own, as a race produced at
#: real time does (a few records per second per partition), but as fast as the broker takes them
SMALL_BATCHES: dict[str, Any] = {"linger.ms": 0, "batch.num.messages": 1, "compression.type": "none"}


@dataclass(frozen=True)
class RaceSpec:
    """The race every run of a ``racewire drill`` invocation simulates."""

    seed: int
    laps: int
    speed: float

    @property
    def race_id(self) -> str:
        return f"drill-{self.seed}"

    @property
    def duration_s(self) -> float:
        """Wall-clock seconds the simulator takes to produce the race at :attr:`speed`."""
        return _session_ms(self.seed, self.laps) / 1000 / self.speed

    def key(self) -> dict[str, Any]:
        return {"race_id": self.race_id, "seed": self.seed, "laps": self.laps, "speed": self.speed}


@cache
def _session_ms(seed: int, laps: int) -> int:
    from simulator.race import RaceSimulator
    from simulator.sources.base import record_ts

    return max(record_ts(r) for r in RaceSimulator(f"drill-{seed}", seed, laps).records())


@cache
def race_records(seed: int, laps: int) -> int:
    """Input records of the race (session, laps, telemetry, race control)."""
    from simulator.race import RaceSimulator

    return sum(1 for _ in RaceSimulator(f"drill-{seed}", seed, laps).records())


#: a fault has fully landed this long after it ends (writes a killed process had in flight)
AFTER_FAULT_S = 0.3


@dataclass
class Fault:
    """One fault as applied: when (monotonic and wall clock), the sample just before it, and facts."""

    what: str
    start: float
    end: float
    end_wall: float
    before: Sample
    #: the first sample taken after the fault had fully landed (what a dead process had sent included)
    after: Sample | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> int | None:
        """The race's state version in Redis around the fault (the higher of before and after)."""
        seen = [v for v in (self.before.version, self.after.version if self.after else None) if v is not None]
        return max(seen) if seen else None


@dataclass
class Run:
    """A race run in progress: what a drill's fault function gets."""

    spec: RaceSpec
    scale: Scale
    stack: Stack
    up: UpRun
    monitor: Monitor
    tail: OutputTail
    deadline: float
    faults: list[Fault] = field(default_factory=list)
    #: faults that could not be applied, with the reason (a drill with any cannot pass)
    unapplied: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def wait_lap(self, lap: int) -> Sample | None:
        """The first sample with the race at ``lap`` or later in Redis (None: never, or ``up`` is gone)."""
        return self.monitor.wait(lambda s: (s.lap or 0) >= lap, self.deadline - time.monotonic(),
                                 give_up=_up_gone)

    def fault(self, what: str, start: float, before: Sample, **info: Any) -> Fault:
        f = Fault(what, start, time.monotonic(), time.time(), before, info=dict(info))
        f.after = self.monitor.wait(lambda s: s.t >= f.end + AFTER_FAULT_S, 5)
        self.faults.append(f)
        log.info("drill fault: %s", what, extra={"race_id": self.spec.race_id, **info})
        return f


# --------------------------------------------------------------------------------------------
# recovery: when has the system caught up after a fault? (measured on the monitor's samples)

Recovered = Callable[[Fault, Sample], str | None]


def flow_caught_up(f: Fault, s: Sample) -> str | None:
    """The flow has caught up: its status says so (every partition read to the end, every record
    read applied), or, without status documents, the state version moved past where it was."""
    if s.flow is not None and s.flow.updated_at is not None and s.flow.updated_at > f.end_wall and s.flow.caught_up:
        return "flow status: lag 0, applied == read"
    if s.version is not None and f.version is not None and s.version > f.version:
        return "state version moving again"
    return None


def redis_restored(f: Fault, s: Sample) -> str | None:
    """Redis holds the race again: every event id and lap-chart entry it held before the fault,
    the race in the race list, and the flow caught up."""
    if s.status is None or s.missing is None or s.missing > 0:
        return None
    how = flow_caught_up(f, s)
    return None if how is None else f"everything Redis held before is back; {how}"


def pg_caught_up(f: Fault, s: Sample) -> str | None:
    """PostgreSQL holds every lap the Redis lap chart has, more than before the fault, and the flow caught up."""
    if s.pg_laps is None or s.chart_laps is None or s.pg_laps < s.chart_laps or s.pg_laps <= (f.before.pg_laps or 0):
        return None
    how = flow_caught_up(f, s)
    return None if how is None else f"PostgreSQL has every lap in the lap chart; {how}"


def recovery(run: Run, recovered: Recovered) -> tuple[float | None, list[dict[str, Any]]]:
    """Seconds from the end of each fault to the first sample ``recovered`` accepts; the worst of them."""
    per_fault = []
    worst: float | None = 0.0
    for f in run.faults:
        found = next(((s, how) for s in run.monitor.since(f.end) if (how := recovered(f, s))), None)
        seconds = None if found is None else round(found[0].t - f.end, 2)
        per_fault.append({"fault": f.what, **f.info, "recovered_s": seconds,
                          "criterion": None if found is None else found[1]})
        worst = None if seconds is None or worst is None else max(worst, seconds)
    return (worst if run.faults else None), per_fault


# --------------------------------------------------------------------------------------------
# the faults


#: the kills come when the race state in Redis is at these fractions of the race distance (8 laps:
#: laps 1, 3 and 5), each once the flow restarted after the previous kill has got further
KILL_AT = (0.15, 0.4, 0.65)


def _up_gone(s: Sample) -> bool:
    return not s.up_running


def kill_flow(run: Run) -> None:
    """``kill -9`` of every dataflow process, three times during the race; ``racewire up``
    restarts it (no hand restart). Each kill waits until the (restarted) flow is further on."""
    laps = run.spec.laps
    done_lap = 0
    for i, frac in enumerate(KILL_AT, 1):
        target = max(1, round(laps * frac), done_lap + 1)

        def ready(s: Sample, target: int = target) -> bool:
            return (s.lap or 0) >= target and bool(s.flow_pids)

        def over(s: Sample) -> bool:
            return not s.up_running or s.status == "finished"

        s = run.monitor.wait(ready, run.deadline - time.monotonic(), give_up=over)
        if s is None or s.status == "finished":
            latest = run.monitor.latest
            why = ("racewire up had exited" if not run.up.running
                   else "the race was over (final in Redis) before it" if latest.status == "finished"
                   else f"no dataflow process had taken the race to lap {target}")
            run.unapplied.append(f"kill {i} of 3 not done: {why}")
            return
        pids = run.up.pids_of("flow", "race")
        if not pids:
            run.unapplied.append(f"kill {i} of 3 not done: no dataflow process")
            return
        before = run.monitor.latest
        start = time.monotonic()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        f = run.fault(f"kill -9 of the dataflow ({i}/3)", start, before, pids=pids, lap=before.lap)

        def restarted(s: Sample, old: frozenset[int] = frozenset(pids)) -> bool:
            return bool(set(s.flow_pids) - old)

        back = run.monitor.wait(restarted, 60, give_up=_up_gone)
        f.info["new_flow_after_s"] = None if back is None else round(back.t - f.end, 2)
        done_lap = max(s.lap or 0, before.lap or 0)


def _midrace(run: Run, frac: float = 0.4) -> Sample | None:
    target = max(1, math.ceil(run.spec.laps * frac))
    s = run.wait_lap(target)
    if s is None:
        why = "racewire up had exited" if not run.up.running else f"the race never reached lap {target} in Redis"
        run.unapplied.append(f"fault not applied: {why}")
    return s


def redis_flush(run: Run) -> None:
    """``FLUSHALL`` in the middle of the race."""
    if _midrace(run, 0.5) is None:
        return
    held = run.monitor.take_baseline()
    before = run.monitor.latest
    start = time.monotonic()
    run.stack.flush_redis()
    run.fault("FLUSHALL", start, before, lap=before.lap, held_before=held)


def redis_outage(run: Run) -> None:
    """Redis stopped for the outage, then started again on the same port. Without persistence,
    as ``racewire up`` runs its own Redis: it comes back empty (``--redis-persist``: with RDB +
    append-only file, it comes back with its data)."""
    if _midrace(run) is None:
        return
    held = run.monitor.take_baseline()
    before = run.monitor.latest
    start = time.monotonic()
    run.stack.redis.stop()
    time.sleep(run.scale.outage_s)
    run.stack.redis.start()
    run.fault(f"Redis stopped {run.scale.outage_s:g} s", start, before, lap=before.lap, held_before=held,
              persistence=run.stack.redis.persist, down_s=round(time.monotonic() - start, 2))


def postgres_outage(run: Run) -> None:
    """PostgreSQL stopped for the outage (fast shutdown), then started again with its data."""
    if _midrace(run) is None:
        return
    before = run.monitor.latest
    start = time.monotonic()
    run.stack.postgres.stop()
    time.sleep(run.scale.outage_s)
    run.stack.postgres.start()
    run.fault(f"PostgreSQL stopped {run.scale.outage_s:g} s", start, before, lap=before.lap,
              down_s=round(time.monotonic() - start, 2))


def _quiet(run: Run, seconds: float, timeout: float) -> bool:
    """Wait until the state version and the outputs read have not changed for ``seconds``."""
    deadline = time.monotonic() + timeout
    mark, since = None, time.monotonic()
    while time.monotonic() < deadline:
        s = run.monitor.latest
        if (s.version, s.outputs) != mark:
            mark, since = (s.version, s.outputs), time.monotonic()
        elif time.monotonic() - since >= seconds:
            return True
        time.sleep(0.1)
    return False


def broker_restart(run: Run) -> None:
    """The broker stopped and started again on the same port. It keeps data in memory only, so it
    comes back empty: no topics, every offset gone. The drill creates nothing on it.

    For the moment the broker stops, the simulator is paused (``SIGSTOP``) until the flow has
    applied what the broker held and the output tail has read what the flow wrote: records a
    memory-only broker held unread when it died are lost with it, whatever racewire does, and
    would make the count depend on timing. The simulator resumes as soon as the broker is down,
    so it produces into the outage (its records must wait for the broker, not be dropped)."""
    if _midrace(run) is None:
        return
    sims = run.up.pids_of("simulate")
    for pid in sims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        paused = time.monotonic()
        drained = _quiet(run, 1.0, 15.0)
        before = run.monitor.latest
        start = time.monotonic()
        run.stack.kafka.stop(timeout=2)  # SIGKILL if it has not gone in 2 s (it waits for its clients)
    finally:
        for pid in sims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    time.sleep(run.scale.outage_s)
    run.stack.kafka.start()
    run.tail.rewind()  # as a consumer that noticed the restart would: new topics start at offset 0
    run.fault(f"broker stopped {run.scale.outage_s:g} s and restarted empty", start, before, lap=before.lap,
              down_s=round(time.monotonic() - start, 2), simulator_paused_s=round(start - paused, 2),
              drained_before_stop=drained)


def no_fault(run: Run) -> None:
    """The uninterrupted reference run."""


@dataclass(frozen=True)
class Drill:
    name: str
    fault: Callable[[Run], None]
    recovered: Recovered
    summary: str


DRILLS: dict[str, Drill] = {d.name: d for d in (
    Drill("kill-flow", kill_flow, flow_caught_up,
          "kill -9 of the dataflow x3 during the race, under racewire up's supervision (no hand restart)"),
    Drill("redis-flush", redis_flush, redis_restored, "FLUSHALL in the middle of the race"),
    Drill("redis-outage", redis_outage, redis_restored,
          "Redis stopped, then started again (empty: no persistence, as racewire up runs it)"),
    Drill("postgres-outage", postgres_outage, pg_caught_up, "PostgreSQL stopped, then started again"),
    Drill("broker-restart", broker_restart, flow_caught_up,
          "the memory-only broker stopped and started again on the same port: it comes back empty"),
    Drill("long-session", no_fault, flow_caught_up,
          f"the race's telemetry in one partition of >= {LONG_SESSION_BATCHES:,} single-record batches, "
          "read by a flow started after it was written"),
)}

#: not a fault: the race run once more, uninterrupted; it must compare clean with the reference,
#: or the drills' verdicts mean nothing (run on demand, not part of ``all``)
CONTROL = Drill("control", no_fault, flow_caught_up, "no fault: the uninterrupted run again (checks the drills)")


# --------------------------------------------------------------------------------------------
# one run of the race


@dataclass
class RunOutcome:
    contents: Contents
    run: Run
    settled: str
    seconds: float
    #: ``racewire up``'s exit code when the drill ended (None: still running, as it should be)
    up_exit: int | None
    #: when the drill started to stop everything (monotonic)
    ended_at: float


def _up_env(stack: Stack, workdir: Path, partitions: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RACEWIRE_")}
    env.update(stack.urls)
    env.update({"RACEWIRE_DATA_DIR": str(workdir / "data"), "RACEWIRE_INPUT_PARTITIONS": str(partitions)})
    # `up` starts no embedded service here; should it ever, never on a port another stack uses
    names = ("HTTP", "KAFKA", "REDIS", "POSTGRES", "REGISTRY")
    for name, port in zip(names, free_ports(len(names)), strict=True):
        env[f"RACEWIRE_{name}_PORT"] = str(port)
    return env


def _prefill_long_partition(stack: Stack, spec: RaceSpec) -> dict[str, Any]:
    """Produce the whole race into one-partition topics, one record per batch, before any flow runs."""
    from infra.topics import create_topics
    from schemas.codec import Codec, make_registry_client
    from simulator.sources.produce import produce_race
    from simulator.sources.synthetic import SyntheticRace

    create_topics(stack.kafka.bootstrap, partitions=1)
    codec = Codec(make_registry_client(stack.registry.url))
    started = time.monotonic()
    counts = produce_race(SyntheticRace(spec.race_id, spec.seed, spec.laps),
                          {"bootstrap.servers": stack.kafka.bootstrap, **SMALL_BATCHES}, codec, None)
    return {"produced": counts, "produce_s": round(time.monotonic() - started, 1),
            "telemetry_batches": counts.get("f1.telemetry.car", 0), "partitions": 1,
            "producer": {k: str(v) for k, v in SMALL_BATCHES.items()}}


def _settle(run: Run, long_session: bool, recovered: Recovered) -> str:
    """Wait until the race is over, the system has recovered from every fault and nothing changes
    any more; says how the wait ended."""
    scale = run.scale
    fp: tuple[Any, ...] | None = None
    since = time.monotonic()
    recovered_faults: set[int] = set()
    while time.monotonic() < run.deadline:
        s = run.monitor.latest
        now = time.monotonic()
        if s.fingerprint() != fp:
            fp, since = s.fingerprint(), now
        quiet = now - since
        # the race is produced once the simulator is done, or, if it hangs, once the race should
        # have ended long ago
        produced = (long_session or (run.monitor.sim_seen and not s.sim_alive)
                    or now - run.up.started_at >= run.spec.duration_s + scale.stall_s)
        if not s.up_running and quiet >= scale.settle_s:
            return "racewire up exited"
        done = produced and s.status == "finished" and quiet >= scale.settle_s
        if done and _all_recovered(run, recovered, recovered_faults):
            return "settled"
        started = s.version is not None or now - run.up.started_at >= scale.startup_s
        if produced and started and quiet >= scale.stall_s:
            return f"stalled: nothing changed for {scale.stall_s:g} s"
        time.sleep(0.25)
    return "deadline: still changing or not finished when the time allowed ran out"


def _all_recovered(run: Run, recovered: Recovered, done: set[int]) -> bool:
    """Every fault has been recovered from (``done``: indices of faults already known to be)."""
    for i, f in enumerate(run.faults):
        if i not in done and any(recovered(f, s) for s in run.monitor.since(f.end)):
            done.add(i)
    return len(done) == len(run.faults)


def run_race(drill: Drill | None, spec: RaceSpec, scale: Scale, *, redis_persist: bool = False,
             keep_dir: bool = False) -> RunOutcome:
    """Run the race once with ``drill``'s fault (None: uninterrupted) and collect what it left."""
    long_session = drill is not None and drill.name == "long-session"
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=f"racewire-drill-{drill.name if drill else 'reference'}-"))
    try:
        with Stack(workdir, redis_persist=redis_persist) as stack:
            prefill = _prefill_long_partition(stack, spec) if long_session else None
            up_args = (["--no-race"] if long_session else
                       ["--seed", str(spec.seed), "--laps", str(spec.laps), "--speed", f"{spec.speed:g}",
                        "--race-id", spec.race_id])
            up = UpRun(workdir, up_args, _up_env(stack, workdir, 1 if long_session else PARTITIONS))
            tail = OutputTail(stack.kafka.bootstrap, stack.registry.url)
            monitor = Monitor(spec.race_id, stack.redis.url, stack.postgres.url, up,
                              lambda: sum(tail.counts().values()))
            deadline = time.monotonic() + scale.startup_s + spec.duration_s + scale.catchup_s
            run = Run(spec, scale, stack, up, monitor, tail, deadline)
            if prefill is not None:
                run.info["long_session"] = prefill
            try:
                up.start()
                tail.start()
                monitor.start()
                (drill.fault if drill else no_fault)(run)
                settled = _settle(run, long_session, drill.recovered if drill else flow_caught_up)
                up_exit, ended_at = up.exit_code, time.monotonic()
                contents = collect(spec.race_id, stack.redis.url, stack.postgres.url, tail)
            finally:
                monitor.stop()
                tail.stop()
                up.stop()
            run.info["outputs_read"] = tail.counts()
            run.info["processes_started_by_up"] = up.started
            run.info["processes_left"] = up.left_behind()
            return RunOutcome(contents, run, settled, round(time.monotonic() - began, 1), up_exit, ended_at)
    finally:
        if keep_dir:
            log.info("drill files kept in %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the reference and the verdict


def reference(spec: RaceSpec, scale: Scale, keep_dir: bool = False) -> Contents:
    """The uninterrupted run's contents; DrillError when that run did not finish cleanly."""
    log.info("reference: an uninterrupted run of %s", spec.key())
    outcome = run_race(None, spec, scale, keep_dir=keep_dir)
    c = outcome.contents
    state = (c.get("redis", {}).get("state") or {}).get("item") or {}
    race = (c.get("pg", {}).get("race") or {}).get("item") or {}
    problems = [f"{store}: {err}" for store, err in c.get("errors", {}).items()]
    if not state.get("final"):
        problems.append(f"the race is not final in Redis (lap {state.get('lap')}, {outcome.settled})")
    if race.get("status") != "finished":
        problems.append(f"the race is not finished in PostgreSQL (status {race.get('status')})")
    if outcome.up_exit is not None:
        problems.append(f"racewire up exited with code {outcome.up_exit}")
    applied, records = (c.get("redis", {}).get("applied") or {}).get("item"), race_records(spec.seed, spec.laps)
    if applied is None or applied < records:
        problems.append(f"the race state applied {applied} of the race's {records} input records")
    if problems:
        raise DrillError("the uninterrupted reference run is not usable: " + "; ".join(problems))
    c["spec"] = spec.key()
    c["seconds"] = outcome.seconds
    return c


@dataclass
class DrillResult:
    drill: str
    passed: bool
    lost: int
    duplicated: int
    wrong: int
    recovered_s: float | None
    duplicated_output: int
    seconds: float
    details: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"drill": self.drill, "passed": self.passed, "lost": self.lost, "duplicated": self.duplicated,
                "wrong": self.wrong, "recovered_s": self.recovered_s, "duplicated_output": self.duplicated_output,
                "seconds": self.seconds, "details": self.details}


def _read_all(run: Run, ref_applied: int | None) -> tuple[float | None, list[dict[str, Any]]]:
    """Without a fault (the long session, the control): seconds from `racewire up`'s start until the
    flow had read all its input: its status says every partition is read to the end, or the race
    state has applied as many input records as the uninterrupted run's (the race being final is not
    enough: laps and race control finish it without a single telemetry record)."""
    def done(s: Sample) -> str | None:
        if s.flow is not None and s.flow.caught_up:
            return "flow status: lag 0, applied == read"
        if s.version is not None and ref_applied is not None and s.version >= ref_applied:
            return "every input record applied (state version)"
        return None

    found = next(((s, how) for s in run.monitor.samples if s.status == "finished" and (how := done(s))), None)
    seconds = None if found is None else round(found[0].t - run.up.started_at, 2)
    return seconds, [{"fault": "none", "read_s": seconds,
                      "criterion": None if found is None else found[1] + ", counted from racewire up's start"}]


#: what a timeline entry holds, after the seconds since the (first) fault ended
TIMELINE_FIELDS = ("version", "lap", "status", "events", "chart_laps", "pg_laps", "outputs", "flow_processes",
                   "simulator")


def timeline(run: Run, most: int = 30) -> dict[str, Any]:
    """What the monitor saw change, as seconds since the first fault ended (or since up started):
    at most ``most`` entries, spread over the run."""
    t0 = min((f.end for f in run.faults), default=run.up.started_at)
    rows: list[list[Any]] = []
    last: tuple[Any, ...] | None = None
    for s in list(run.monitor.samples):
        row = (s.version, s.lap, s.status, s.events, s.chart_laps, s.pg_laps, s.outputs, len(s.flow_pids),
               s.sim_alive)
        if row != last:
            rows.append([round(s.t - t0, 1), *row])
            last = row
    if len(rows) > most:
        step = len(rows) / most
        rows = [rows[int(i * step)] for i in range(most - 1)] + [rows[-1]]
    return {"fields": ["s_after_fault", *TIMELINE_FIELDS], "changes": rows}


def run_drill(name: str, spec: RaceSpec, scale: Scale, ref: Contents, *, redis_persist: bool = False,
              keep_dir: bool = False) -> DrillResult:
    """Run one drill and judge it against the reference."""
    drill = CONTROL if name == CONTROL.name else DRILLS[name]
    log.info("drill %s: %s", name, drill.summary)
    outcome = run_race(drill, spec, scale, redis_persist=redis_persist, keep_dir=keep_dir)
    run = outcome.run
    cmp = compare_contents(ref, outcome.contents)
    if name in ("long-session", CONTROL.name):
        ref_applied = ((ref.get("redis") or {}).get("applied") or {}).get("item")
        recovered_s, per_fault = _read_all(run, ref_applied)
    else:
        recovered_s, per_fault = recovery(run, drill.recovered)
    failed: list[str] = list(run.unapplied)
    if not run.faults and name not in ("long-session", CONTROL.name):
        failed.append("no fault was applied")
    if name == "long-session":
        batches = run.info.get("long_session", {}).get("telemetry_batches", 0)
        if batches < LONG_SESSION_BATCHES:
            failed.append(f"the race has {batches:,} telemetry records: not a long session "
                          f"(>= {LONG_SESSION_BATCHES:,} batches needed; use more --laps)")
    if recovered_s is None:
        failed.append("never recovered (see recovery)")
    if outcome.up_exit is not None:
        failed.append(f"racewire up exited with code {outcome.up_exit} during the drill")
    failed.extend(f"could not read {store}: {err}" for store, err in outcome.contents.get("errors", {}).items())
    if cmp.lost:
        failed.append(f"{cmp.lost} items lost")
    if cmp.duplicated:
        failed.append(f"{cmp.duplicated} items duplicated")
    if cmp.wrong:
        failed.append(f"{cmp.wrong} items differ from the uninterrupted run or exist only in the drill run")
    first_fault = min((f.start for f in run.faults), default=run.up.started_at)
    last = run.monitor.latest
    details: dict[str, Any] = {
        "what": drill.summary,
        "scale": scale.name,
        "race": spec.key(),
        "failed_because": failed,
        "settled": outcome.settled,
        "recovery": per_fault,
        "up": {"exit_code": outcome.up_exit,
               "console_after_fault": run.up.console(first_fault, outcome.ended_at)[:12]},
        "final_flow_status": None if last.flow is None else vars(last.flow),
        **({} if last.missing is None else {"held_before_fault_missing_at_end": last.missing}),
        **run.info,
        "compared": cmp.details(),
        "reference_s": ref.get("seconds"),
    }
    if failed:
        details["timeline"] = timeline(run)
    return DrillResult(name, not failed, cmp.lost, cmp.duplicated, cmp.wrong, recovered_s, cmp.duplicated_output,
                       outcome.seconds, details)
