"""Sinks that ride out an outage: a write that fails because the store is away is retried with
backoff until it succeeds, holding the worker meanwhile.

Holding the worker *is* the back-pressure: while a sink write waits, the worker reads no more input
(the source's own bounded buffers fill and stop fetching), so memory stays bounded by one output
batch, and nothing is dropped: the same batch is written once the store answers again. Every sink
write is idempotent (upserts keyed by the facts, version guards, event-id indexes), so a write that
reached the store before the connection broke is harmless to repeat.

One warning goes to the log when an outage starts and one info line when it ends (with how long
it lasted and how many retries it took); every retry counts in
``racewire_flow_sink_retries_total{sink=...}`` (Prometheus, default registry). An error that is not
an outage (a missing table, a bad command) is raised at once: retrying would not fix it.

The retrying is tenacity's (exponential backoff with jitter, capped).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import REGISTRY, Counter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    stop_never,
    wait_exponential,
    wait_random,
)

log = logging.getLogger("racewire.flow.sink")

_T = TypeVar("_T")

RETRIES_METRIC = "racewire_flow_sink_retries_total"


def _retries_counter() -> Counter:
    """The shared ``racewire_flow_sink_retries_total`` counter in the default registry; created by
    the first sink module that asks (several sink modules count into it, one label each)."""
    registered: dict[str, Any] = REGISTRY._names_to_collectors  # type: ignore[attr-defined]
    existing = registered.get(RETRIES_METRIC)
    if existing is not None:
        return existing  # type: ignore[no-any-return]
    try:
        return Counter(RETRIES_METRIC, "Sink writes retried after the store was unreachable", ["sink"])
    except ValueError:  # registered meanwhile
        return registered[RETRIES_METRIC]  # type: ignore[no-any-return]


SINK_RETRIES = _retries_counter()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a sink retries a write while its store is unreachable."""

    #: first wait, seconds; doubles (with jitter) up to ``max_backoff_s``
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    #: give up (raise, which stops the flow) after this many seconds of one outage; 0 = never
    give_up_after_s: float = 0.0


class OutageRetry:
    """Runs a sink's writes, retrying those that fail with one of ``transient`` but none of
    ``permanent`` (see the module docstring). One per sink partition; not thread-safe."""

    def __init__(self, sink: str, transient: tuple[type[BaseException], ...], policy: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 permanent: tuple[type[BaseException], ...] = ()) -> None:
        self.sink = sink
        self.transient = transient
        self.permanent = permanent
        self.policy = policy or RetryPolicy()
        self.retries = 0  # in the current outage
        self.outage_started: float | None = None  # monotonic
        self.outages = 0
        self._counter = SINK_RETRIES.labels(sink=sink)
        self._sleep = sleep

    def _before_sleep(self, state: RetryCallState) -> None:
        self.retries += 1
        self._counter.inc()
        if self.outage_started is None:
            self.outage_started = time.monotonic()
            self.outages += 1
            error = state.outcome.exception() if state.outcome is not None else None
            log.warning("%s sink: the store is unreachable (%s: %s); holding the flow and retrying with backoff "
                        "until it answers", self.sink, type(error).__name__, error,
                        extra={"sink": self.sink, "error": repr(error)})

    def is_outage(self, error: BaseException) -> bool:
        return isinstance(error, self.transient) and not isinstance(error, self.permanent)

    def call(self, write: Callable[[], _T]) -> _T:
        """``write()``, retried while it fails with a transient error; raises any other error."""
        policy = self.policy
        retrying = Retrying(
            retry=retry_if_exception(self.is_outage),
            wait=wait_exponential(multiplier=policy.initial_backoff_s, max=policy.max_backoff_s)
            + wait_random(0, policy.initial_backoff_s),
            stop=stop_after_delay(policy.give_up_after_s) if policy.give_up_after_s > 0 else stop_never,
            before_sleep=self._before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        result = retrying(write)
        if self.outage_started is not None:
            seconds = time.monotonic() - self.outage_started
            log.info("%s sink: the store answers again after %.1f s and %d retries; writing resumed",
                     self.sink, seconds, self.retries,
                     extra={"sink": self.sink, "outage_s": round(seconds, 1), "retries": self.retries})
            self.outage_started, self.retries = None, 0
        return result
