"""Gap and interval of every car in a timing tower: one rule for the live tower and the per-lap one.

Virtual timing loops. The official timing measures gaps at loops buried in the track, not only at
the line. Here a lap is cut into :func:`loops_per_lap` equal stretches of about
:data:`LOOP_SPACING_M`; loop ``g`` of the race sits at race progress ``g / per_lap`` (laps completed
+ fraction of the lap), so loop ``n * per_lap`` is the timing line at the end of lap ``n``. A car's
passage time at a loop is its crossing time where the loop is the line and the lap is in, and
otherwise the instant its telemetry progress reached the loop, interpolated between the two samples
either side of it (:class:`LoopTimes`, fed once per sample, does work only when a sample reaches a
new loop). A source without telemetry has the line only.

The rule (:func:`tower_gaps`), for cars in tower order:

- the **interval** of a car is the difference of its passage time and the car ahead's at the latest
  loop both have passed. Where that difference is negative (the car ahead only got ahead since that
  loop, or the two are side by side, inside the running order's hysteresis), it is how long the car
  has been missing the next loop that the car ahead has already passed, and never below 0;
- the **gap** of a car is the gap of the car ahead plus its interval, so gaps grow down the tower and
  each interval is the difference of two gaps;
- a car that the other passed a loop one lap (or more) later before it got there itself is that many
  **laps down**: the gap (to the leader) and the interval (to the car ahead) are then in laps;
- a car with no figures (retired) shows none, and breaks the chain.

At the line the passage times are the crossing times, so a tower whose cars are all measured at the
line (a source without telemetry, the tower of a completed lap, finishers at the flag) shows exactly
the crossing-time differences: gap to the leader, interval to the car ahead.

>>> a = Passages(per_lap=1, laps=2, crossings=[90_000, 180_000])
>>> b = Passages(per_lap=1, laps=2, crossings=[90_500, 181_200])
>>> c = Passages(per_lap=1, laps=1, crossings=[91_000])
>>> tower_gaps([a, b, c])
[(None, 0, None, 0), (1200, 0, 1200, 0), (1700, 0, 500, 0)]

Pure: no I/O; what it needs is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

#: spacing of the virtual timing loops, metres (the official timing has a loop every 100-200 m)
LOOP_SPACING_M = 150.0

#: (gap_ms, gap_laps, interval_ms, interval_laps) of one row: ``*_ms`` is None when the figure is in
#: laps or unknown
Figures = tuple[int | None, int, int | None, int]
_NONE: Figures = (None, 0, None, 0)


def loops_per_lap(track_m: float, spacing_m: float = LOOP_SPACING_M) -> int:
    """Loops on a lap of ``track_m`` metres, about ``spacing_m`` apart (the line is one of them).

    >>> loops_per_lap(5300), loops_per_lap(0)
    (35, 1)
    """
    return max(1, round(track_m / spacing_m))


@dataclass(slots=True)
class LoopTimes:
    """Passage times of one car at the loops its telemetry reached, in loop order.

    Fed the car's samples in its own order (:meth:`sample`, which a caller need only call once a
    sample's progress reaches the threshold it returned last); a loop's time is interpolated between
    the samples either side of it, so it depends on this car's samples alone, never on how records
    were batched or interleaved with other cars. Loops the car was already past at its first sample
    have no time (on the grid, or a flow that starts mid-race).

    >>> lt = LoopTimes()
    >>> lt.sample(-1, 0.0, 1_000, 0.05, 10)             # first sample: a reference, no loop passed
    0.0999999999
    >>> lt.sample(1_000, 0.05, 2_000, 0.25, 10)         # loops 1 and 2 passed between the samples
    0.2999999999
    >>> lt.start, lt.times, lt.reached
    (1, [1250, 1750], 2)
    """

    #: loop index of ``times[0]``
    start: int = 0
    times: list[int] = field(default_factory=list)
    #: the highest loop the car's telemetry has reached (-1: no sample yet)
    reached: int = -1

    def sample(self, prev_ms: int, prev_progress: float, ts_ms: int, progress: float, per_lap: int) -> float:
        """A sample at ``ts_ms`` and race ``progress``; the car's previous one was at ``prev_ms``
        (-1: none) and ``prev_progress``. Records the loops reached since, and returns the progress
        below which the next sample cannot reach a new loop (a hair below the loop, so that
        ``int(progress * per_lap)`` decides at the boundary)."""
        loop = int(progress * per_lap)
        g = self.reached + 1
        if loop >= g:
            if prev_ms < 0 or g == 0:
                self.start = loop + 1  # the first sample: passages from the next loop on
            else:
                times = self.times
                if not times:
                    self.start = g
                span_ms, span = ts_ms - prev_ms, progress - prev_progress
                # prev_progress < g / per_lap <= progress: the previous sample was on a loop < g
                while g <= loop:
                    times.append(prev_ms + round((g / per_lap - prev_progress) / span * span_ms))
                    g += 1
            self.reached = loop
        return (self.reached + 1 - 1e-9) / per_lap

    def latest(self) -> int:
        """The latest loop with a passage time (-1: none)."""
        return self.start + len(self.times) - 1 if self.times else -1


@dataclass(slots=True)
class Passages:
    """Where one car stands in the tower: the loops it has passed and when (see the module doc).

    ``laps`` crossings of ``crossings`` count (the tower of a past lap cuts a car at that lap);
    ``upto`` caps the loops that count (a finisher stops at its flag line: its in-lap is no race).
    """

    per_lap: int
    laps: int
    crossings: Sequence[int]
    loops: LoopTimes | None = None
    #: the car's latest telemetry sample (session ms): it had not reached its next loop by then
    seen_ms: int = -1
    upto: int | None = None
    #: the latest loop with a passage time (-1: none), and that time; computed
    latest: int = field(init=False)
    latest_ms: int | None = field(init=False)

    def __post_init__(self) -> None:  # once per car and snapshot: kept to a few operations
        laps, lt = self.laps, self.loops
        latest = laps * self.per_lap if laps else -1
        latest_ms = self.crossings[laps - 1] if laps else None
        if lt is not None and lt.times:
            tel = lt.start + len(lt.times) - 1
            if tel > latest:
                latest, latest_ms = tel, lt.times[-1]
        self.latest = latest
        if self.upto is not None and latest > self.upto:
            self.latest = latest = self.upto
            latest_ms = self.at(latest)
        self.latest_ms = latest_ms

    def at(self, loop: int) -> int | None:
        """Passage time at ``loop`` (the crossing time at the line), None when unknown."""
        if loop > self.latest or loop < 0:
            return None
        per_lap = self.per_lap
        if loop % per_lap == 0 and 0 < loop <= self.laps * per_lap:
            return self.crossings[loop // per_lap - 1]
        lt = self.loops
        if lt is not None:
            i = loop - lt.start
            if 0 <= i < len(lt.times):
                return lt.times[i]
        return None


def laps_down(me: Passages, other: Passages) -> int:
    """Laps ``me`` is down on ``other``: how many times ``other`` passed the loop ``me`` passed
    last, a lap (two, …) further on, before ``me`` got there."""
    g, t, per_lap = me.latest, me.latest_ms, me.per_lap
    if t is None or other.latest < g + per_lap:
        return 0
    down = 0
    while True:
        u = other.at(g + (down + 1) * per_lap)
        if u is None or u > t:
            return down
        down += 1


def behind(me: Passages, other: Passages) -> tuple[int | None, int]:
    """(ms, laps) of ``me`` behind ``other``, the car shown ahead of it: in laps when lapped, else
    the difference of passage times at the latest loop both have passed (see the module doc)."""
    if me.latest < 0:
        return None, 0
    down = laps_down(me, other)
    if down:
        return None, down
    g = me.latest
    if other.latest < g:
        g = other.latest
        a, b = me.at(g), other.latest_ms
    else:
        a, b = me.latest_ms, other.at(g)
    if (a is None or b is None) and g >= me.per_lap:
        g -= g % me.per_lap  # one of them has no telemetry there: the latest line both crossed
        a, b = me.at(g), other.at(g)
    if a is None or b is None:
        return None, 0
    ms = a - b
    if ms < 0 and other.latest > g:
        # ahead only since loop g: it passed g + 1, which `me` had not reached at its latest sample
        ahead_at = other.at(g + 1)
        ms = me.seen_ms - ahead_at if ahead_at is not None else 0
    return (ms if ms > 0 else 0), 0


def tower_gaps(cars: Sequence[Passages | None]) -> list[Figures]:
    """Gap (to the first car), interval (to the car above) of each car, in tower order; a car given
    as None (retired) has no figures and chains to nothing."""
    out: list[Figures] = []
    leader = cars[0] if cars else None
    ahead: Passages | None = None
    ahead_gap: int | None = None  # gap of the car above, when on the leader's lap and known
    for i, me in enumerate(cars):
        if me is None or i == 0:
            out.append(_NONE)
            ahead, ahead_gap = me, (0 if me is not None else None)
            continue
        interval = behind(me, ahead) if ahead is not None else (None, 0)
        gap: tuple[int | None, int]
        if leader is None:
            gap = (None, 0)
        elif ahead is leader:
            gap = interval
        else:
            down = laps_down(me, leader)
            if down:
                gap = (None, down)
            elif ahead_gap is not None and interval[0] is not None:
                gap = (ahead_gap + interval[0], 0)
            else:
                gap = behind(me, leader)
        out.append((gap[0], gap[1], interval[0], interval[1]))
        ahead, ahead_gap = me, gap[0] if not gap[1] else None
    return out
