"""Short, varied, deterministic commentary lines from race events (no external service).

The template for an event is picked by a hash of its event id, so the same race always reads the
same way, while consecutive overtakes don't all sound alike.

>>> from schemas.model import EventType, OvertakeKind, RaceEvent
>>> e = RaceEvent("r:overtake:5:16:1", "r", EventType.OVERTAKE, 400_000, 5, 16, "LEC", 1, "VER",
...               overtake_kind=OvertakeKind.ON_TRACK)
>>> line = commentary_for(e)
>>> line.text == commentary_for(e).text and "LEC" in line.text and "VER" in line.text
True
"""

from __future__ import annotations

import zlib

from schemas.model import Commentary, EventType, RaceEvent

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "OVERTAKE:ON_TRACK": (
        "{code} gets past {other} for {pos}!",
        "Lovely move from {code}, through on {other} on lap {lap}.",
        "{code} makes it stick on {other}.",
        "{other} can't hold off {code} any longer.",
        "Wheel to wheel... and {code} is ahead of {other}!",
    ),
    "OVERTAKE:PIT": (
        "{code} moves ahead of {other} through the pit sequence.",
        "The stops shuffle the order: {code} now ahead of {other}.",
        "{code} gains a place on {other} in the pits.",
    ),
    "OVERTAKE:RETIREMENT": (
        "{code} goes by the stricken {other}.",
        "{other} is slowing, and {code} takes the place.",
    ),
    "PIT_STOP": (
        "{code} dives into the pits at the end of lap {lap}{pit}.",
        "Box, box for {code}{pit}.",
        "{code} comes in for fresh tyres{pit}.",
    ),
    "FASTEST_LAP": (
        "Purple! {code} sets the fastest lap, {time}.",
        "{code} goes quickest of anyone: {time}.",
        "A new fastest lap for {code}, {time} on lap {lap}.",
    ),
    "RETIREMENT": (
        "Heartbreak for {code}, that's the end of the race.",
        "{code} is out of the race.",
        "Race over for {code}.",
    ),
    "FLAG:SC": ("Safety car! The field will bunch up.", "The safety car is deployed."),
    "FLAG:VSC": ("Virtual safety car: everyone slows to a delta.", "VSC deployed."),
    "FLAG:VSC_ENDING": ("The virtual safety car is ending.",),
    "FLAG:RED": ("Red flag! The session is suspended.",),
    "FLAG:GREEN": ("Green flag, we're racing again.", "Track clear, back to racing."),
    "FLAG:YELLOW": ("Yellow flags out on track.",),
    "RACE_START": ("Lights out and away we go!", "And they're off!"),
    "CHEQUERED_FLAG": ("The chequered flag is out!", "And that's the flag!"),
    "LAST_LAP_HERO": (
        "{code} {final}last-lap hero with {time}, {gained}.",
        "Nobody was quicker on their final lap than {code}: {time}, {gained}.",
    ),
    "CLASSIFICATION": ("The results are in: {winner} wins!",),
}

_PRIORITY = {"OVERTAKE": 2, "FASTEST_LAP": 2, "RETIREMENT": 2, "FLAG": 2, "LAST_LAP_HERO": 3,
             "CLASSIFICATION": 3, "RACE_START": 3, "CHEQUERED_FLAG": 3, "PIT_STOP": 1}


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    minutes, rest = divmod(ms, 60_000)
    return f"{minutes}:{rest // 1000:02d}.{rest % 1000:03d}"


def _template_key(e: RaceEvent) -> str | None:
    if e.type == EventType.OVERTAKE:
        return f"OVERTAKE:{e.overtake_kind}"
    if e.type == EventType.FLAG:
        return f"FLAG:{e.track_status}"
    if str(e.type) in _TEMPLATES:
        return str(e.type)
    return None


def commentary_for(e: RaceEvent) -> Commentary | None:
    """The commentary line for an event, or None for events not worth a line."""
    if e.type == EventType.LAST_LAP_HERO and e.provisional:
        return None
    key = _template_key(e)
    if key is None:
        return None
    options = _TEMPLATES.get(key)
    if not options:
        return None
    template = options[zlib.crc32(e.event_id.encode()) % len(options)]
    gained = e.positions_gained or 0
    winner = e.classification[0].code if e.classification else "?"
    text = template.format(
        code=e.code or "?", other=e.other_code or "?", lap=e.lap, time=_time(e.lap_time_ms),
        pos="position", pit=f" ({e.pit_lane_ms / 1000:.1f} s in the pit lane)" if e.pit_lane_ms else "",
        final="is the " if not e.provisional else "is provisionally the ",
        gained=(f"gaining {gained} place{'s' if gained != 1 else ''}" if gained > 0
                else f"losing {-gained} place{'s' if gained != -1 else ''}" if gained < 0 else "holding position"),
        winner=winner,
    )
    if e.under_safety_car:
        text += " (under neutralisation)"
    return Commentary(event_id=f"{e.event_id}:commentary", race_id=e.race_id, ts_ms=e.ts_ms, lap=e.lap,
                      text=text, source_event_id=e.event_id, priority=_PRIORITY.get(str(e.type), 1))
