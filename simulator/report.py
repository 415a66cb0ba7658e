"""The replay report: what the real pipeline computed for a replayed race, read back from Redis
(never recomputed here). ``infra.pipeline_run.run_through_pipeline`` produces the race, runs the
race dataflow on it and returns this report:

```
{"race_id": str,
 "laps": {"1": ["LEC", "VER", ...], ...},        # race:{id}:lapchart
 "classification": [{"position", "driver", "laps", "status"}, ...],   # CLASSIFICATION event
 "fastest_lap": {"driver", "lap", "lap_time_ms"},                      # state document
 "last_lap_hero": {"driver", "lap", "lap_time_ms"},                    # state document
 "pit_stops": [{"driver", "lap"}, ...],            # PIT_STOP events, lap = the in-lap
 "overtakes": [{"lap", "driver", "passed", "kind"}, ...]}              # OVERTAKE events
```

:func:`build_report` is the pure part (Redis contents → report).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from schemas import redis_layout as layout
from schemas.model import SessionKind

log = logging.getLogger("racewire.replay")

FLOW_TIMEOUT_S = 600.0
"""Give up waiting for the race to be final in Redis after this long (after the last record)."""
SETTLE_S = 1.0
"""After the race is final, wait this long for the last writes (lap chart, events) to land."""


# ------------------------------------------------------------------------------ pure


def build_report(
    race_id: str,
    codes: dict[int, str],
    state: dict[str, Any],
    lapchart: dict[int, list[int]],
    events: list[dict[str, Any]],
) -> dict[str, Any]:
    """The replay report from the race's Redis contents (state doc, lap chart, event stream)."""

    def code(n: int | None) -> str | None:
        return None if n is None else codes.get(n, str(n))

    classification: list[dict[str, Any]] = []
    pits: list[dict[str, Any]] = []
    overtakes: list[dict[str, Any]] = []
    for e in events:
        kind = e.get("type")
        if kind == "CLASSIFICATION" and e.get("classification"):
            classification = [
                {"position": c["position"], "driver": code(c["driver_number"]), "laps": c["laps"],
                 "status": c["status"]}
                for c in e["classification"]
            ]
        elif kind == "PIT_STOP":
            pits.append({"driver": code(e["driver_number"]), "lap": e["lap"]})
        elif kind == "OVERTAKE":
            overtakes.append({"lap": e["lap"], "driver": code(e["driver_number"]),
                              "passed": code(e["other_driver_number"]), "kind": e["overtake_kind"]})
    kind = SessionKind(state.get("session_type") or "RACE")
    if kind.timed:  # ordered by best lap: the tower is the classification
        classification = [
            {"position": r["position"], "driver": code(r["driver_number"]), "laps": r["laps"],
             "status": f"OUT {kind.part_name(r['knocked_out'])}" if r.get("knocked_out") else "",
             "best_lap_ms": r.get("best_lap_ms")}
            for r in state.get("rows") or []
        ]
    pits.sort(key=lambda p: (p["lap"], p["driver"] or ""))
    overtakes.sort(key=lambda o: o["lap"])  # the stream interleaves partitions; stable per lap
    fl = state.get("fastest_lap")
    hero = state.get("hero")
    return {
        "race_id": race_id,
        "session_type": str(kind),
        "laps": {str(lap): [code(n) for n in order] for lap, order in sorted(lapchart.items())},
        "classification": classification,
        "fastest_lap": None if not fl else {"driver": code(fl["driver_number"]), "lap": fl["lap"],
                                            "lap_time_ms": fl["lap_time_ms"]},
        "last_lap_hero": None if not hero else {"driver": code(hero["driver_number"]), "lap": hero["lap"],
                                                "lap_time_ms": hero["lap_time_ms"]},
        "pit_stops": pits,
        "overtakes": overtakes,
    }


# ------------------------------------------------------------------------------ Redis


def read_redis(client: Any, race_id: str) -> tuple[dict[str, Any], dict[int, list[int]], list[dict[str, Any]]]:
    """State document, lap chart and events of a race as the dataflow wrote them."""
    raw = client.get(layout.state_key(race_id))
    state = json.loads(raw) if raw else {}
    chart = {int(k): json.loads(v) for k, v in client.hgetall(layout.lapchart_key(race_id)).items()}
    events = []
    for _id, fields in client.xrange(layout.events_key(race_id)):
        kind = fields[layout.EVENT_TYPE_FIELD].decode()
        if kind == layout.COMMENTARY_TYPE:
            continue
        events.append({**json.loads(fields[layout.EVENT_JSON_FIELD]), "type": kind})
    return state, chart, events


def read_strategy(client: Any, race_id: str) -> dict[str, Any]:
    """Summary of the strategy calls the dataflow made: calls per lap, actions, the models used."""
    per_lap: dict[int, int] = {}
    actions: dict[str, int] = {}
    models: set[str] = set()
    for raw in client.hvals(layout.strategy_history_key(race_id)):
        call = json.loads(raw)
        per_lap[call["lap"]] = per_lap.get(call["lap"], 0) + 1
        actions[call["action"]] = actions.get(call["action"], 0) + 1
        models.add(call["model"])
    return {"calls_per_lap": {str(k): per_lap[k] for k in sorted(per_lap)}, "actions": actions,
            "models": sorted(models)}


def clear_race(client: Any, race_id: str) -> None:
    """Drop this race's keys (a rerun of the same race id starts clean); nothing else."""
    keys = list(client.scan_iter(match=layout.race_keys_pattern(race_id), count=1000))
    if keys:
        client.delete(*keys)
    client.hdel(layout.RACES_KEY, race_id)


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
