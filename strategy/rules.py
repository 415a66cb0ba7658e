"""Rule-based strategy calls: what answers when the models or the Monte Carlo cannot.

A pit strategist's rules of thumb, stated so anyone can check them:

- a compound lasts about ``STINT_SHARE`` of the race distance (soft 30 %, medium 45 %, hard 60 %);
- a dry race needs two different dry compounds, so a car that has used only one must stop;
- a car that can reach the flag on its tyres (age + laps left within the compound's life) and
  has met the two-compound rule stays out;
- a car in the middle of a stop gets no call until its out-lap;
- otherwise the window is the last laps of the current set's life (two laps either side),
  never before the next lap, and the next set is the softest one that lasts to the flag
  (else the hard).

No probabilities: the fields that need a simulation are left empty, and the call says that it
is rule-based and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from strategy.field import CarInput, Situation, compound_index


@dataclass(frozen=True, slots=True)
class Call:
    """A rule-based call: the fields of :class:`strategy.calls.Call` that need no simulation."""

    number: int
    action: str
    pit_window_start: int | None
    pit_window_end: int | None
    compound: str | None
    undercut_threat: float | None
    overcut_chance: float | None
    expected_position: float | None
    explanation: str


STINT_SHARE = {"SOFT": 0.30, "MEDIUM": 0.45, "HARD": 0.60}
WINDOW_HALF = 2


def tyre_life_laps(compound: str | None, total_laps: int) -> int:
    """Laps a set of ``compound`` lasts in a race of ``total_laps``.

    >>> tyre_life_laps("MEDIUM", 57)
    26
    """
    share = STINT_SHARE.get((compound or "MEDIUM").upper(), STINT_SHARE["MEDIUM"])
    return max(5, round(share * total_laps))


def rule_calls(situation: Situation, reason: str) -> list[Call]:
    s = situation
    calls = []
    for position, car in enumerate(s.cars, start=1):
        if car.active:
            calls.append(_call(car, s, position, reason))
    return calls


def _call(car: CarInput, s: Situation, position: int, reason: str) -> Call:
    left = s.total_laps - s.lap
    life = tyre_life_laps(car.compound, s.total_laps)
    dry_used = {c.upper() for c in (*car.used_compounds, car.compound or "") if c.upper() in STINT_SHARE}
    needs_second = compound_index(car.compound) < 3 and len(dry_used) < 2
    why = f"(rule-based: {reason})"
    if car.pitting:
        return Call(number=car.number, action="NO_CALL", pit_window_start=None, pit_window_end=None,
                    compound=None, undercut_threat=None, overcut_chance=None, expected_position=float(position),
                    explanation=f"{car.code or car.number} is pitting now: the next call follows its out-lap {why}")
    if car.tyre_age + left <= life and not needs_second:
        return Call(number=car.number, action="STAY_OUT", pit_window_start=None, pit_window_end=None,
                    compound=None, undercut_threat=None, overcut_chance=None, expected_position=float(position),
                    explanation=f"{car.code or car.number} can reach the flag on these tyres {why}")
    ideal = s.lap + max(1, life - car.tyre_age)
    start = max(s.lap + 1, ideal - WINDOW_HALF)
    end = max(start, min(s.total_laps - 1, ideal + WINDOW_HALF))
    start = min(start, end)
    after = s.total_laps - ideal
    choices = [c for c in ("HARD", "MEDIUM", "SOFT") if tyre_life_laps(c, s.total_laps) >= after]
    options = [c for c in reversed(choices) if not (needs_second and c in dry_used)]
    compound = options[0] if options else "HARD"
    action = "BOX_THIS_LAP" if start == s.lap + 1 else "BOX_IN_WINDOW"
    return Call(number=car.number, action=action, pit_window_start=start, pit_window_end=end, compound=compound,
                undercut_threat=None, overcut_chance=None, expected_position=float(position),
                explanation=f"box L{start}-L{end} for {compound}: {car.compound or 'these'} tyres last about "
                            f"{life} laps {why}")
