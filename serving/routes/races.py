"""Races: the list, and each race's timing tower, hero, fastest lap, events and drivers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from serving.deps import RaceId, RateLimited, SettingsDep, StoreDep, StreamIdQuery
from serving.fallback import SOURCE_HEADER, use_fallback
from serving.models import EventsOut, FastestLapResponse, HeroResponse, LeaderboardOut, RaceDriversOut, RacesOut
from serving.store import SOURCE, StreamId, drivers_from_state

# use_fallback: while Redis is unreachable these answer from PostgreSQL (header X-Racewire-Source)
router = APIRouter(prefix="/races", tags=["races"], dependencies=[RateLimited, Depends(use_fallback)])


def _source(response: Response) -> None:
    response.headers[SOURCE_HEADER] = SOURCE.get()

NO_STATE = "race {!r} has no leaderboard yet; it appears with the first snapshot from the dataflow"


@router.get("", response_model=RacesOut, summary="Known races and their status")
async def list_races(store: StoreDep, response: Response) -> dict[str, Any]:
    races = await store.races()
    _source(response)
    return {"races": races}


@router.get("/{race_id}/leaderboard", response_model=LeaderboardOut,
            responses={404: {"description": "unknown race, or no snapshot yet"}},
            summary="Live timing tower (the latest snapshot, with car positions for the map)")
async def leaderboard(race_id: RaceId, store: StoreDep) -> Response:
    raw = await store.state_raw(race_id)
    headers = {SOURCE_HEADER: SOURCE.get()}
    if raw is None:
        return Response(f'{{"detail": "{NO_STATE.format(race_id)}"}}', status_code=404, media_type="application/json",
                        headers=headers)
    return Response(raw, media_type="application/json", headers=headers)  # stored JSON, passed through untouched


@router.get("/{race_id}/hero", response_model=HeroResponse, summary="Last-lap hero (provisional until final)")
async def hero(race_id: RaceId, store: StoreDep, response: Response) -> dict[str, Any]:
    state = await store.state(race_id) or {}
    _source(response)
    return {"race_id": race_id, "hero": state.get("hero"), "final": bool(state.get("final"))}


@router.get("/{race_id}/fastest-lap", response_model=FastestLapResponse, summary="Fastest lap so far")
async def fastest_lap(race_id: RaceId, store: StoreDep, response: Response) -> dict[str, Any]:
    state = await store.state(race_id) or {}
    _source(response)
    return {"race_id": race_id, "fastest_lap": state.get("fastest_lap")}


@router.get("/{race_id}/events", response_model=EventsOut,
            summary="Race events and commentary, oldest first",
            description="With `after`, the entries after that id (page on with `next`); without it, the newest "
                        "`limit` entries. Ids are the Redis stream ids the SSE stream uses.")
async def events(race_id: RaceId, store: StoreDep, response: Response,
                 after: StreamIdQuery = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 type: Annotated[str | None, Query(pattern=r"^[A-Z_]{1,40}$",
                                                   description="only this type, e.g. OVERTAKE")] = None,
                 ) -> dict[str, Any]:
    if after is not None:
        entries = await store.events_after(race_id, StreamId.parse(after), limit)
    else:
        entries = await store.latest_events(race_id, limit)
    _source(response)
    last = str(entries[-1].id) if entries else after
    if type is not None:
        entries = [e for e in entries if e.type == type]
    return {"race_id": race_id, "events": [e.to_api() for e in entries], "next": last}


@router.get("/{race_id}/drivers", response_model=RaceDriversOut, summary="Drivers, teams and the track of a race")
async def race_drivers(race_id: RaceId, store: StoreDep, settings: SettingsDep, response: Response) -> dict[str, Any]:
    session = await store.session(race_id)
    _source(response)
    history = bool(settings.database_url)
    if session is not None:
        start = session.get("start_time")
        return {"race_id": race_id, "drivers": session.get("drivers") or [],
                "track_outline": session.get("track_outline") or [], "name": session.get("name"),
                "circuit": session.get("circuit"), "total_laps": session.get("total_laps"),
                "track_length_m": session.get("track_length_m"), "start_time": None if start is None else str(start),
                "history": history}
    state = await store.state(race_id) or {}
    return {"race_id": race_id, "drivers": drivers_from_state(state), "total_laps": state.get("total_laps"),
            "history": history}
