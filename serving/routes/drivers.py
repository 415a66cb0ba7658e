"""Drivers across every known race."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serving.deps import RateLimited, StoreDep
from serving.models import DriversOut
from serving.store import drivers_from_state

router = APIRouter(prefix="/drivers", tags=["races"], dependencies=[RateLimited])

#: races looked at for /api/drivers (the newest by id); bounds the work per request
MAX_RACES = 200


@router.get("", response_model=DriversOut, summary="Every driver of the known races, with the races they are in")
async def list_drivers(store: StoreDep) -> dict[str, Any]:
    merged: dict[tuple[int, str], dict[str, Any]] = {}
    for race_id in (await store.race_ids())[-MAX_RACES:]:
        session = await store.session(race_id)
        drivers = (session or {}).get("drivers")
        if drivers is None:
            drivers = drivers_from_state(await store.state(race_id) or {})
        for d in drivers:
            key = (int(d.get("number") or 0), str(d.get("code")))
            entry = merged.setdefault(key, {**d, "races": []})
            entry["races"].append(race_id)
    return {"drivers": sorted(merged.values(), key=lambda d: (d["number"], d["code"]))}
