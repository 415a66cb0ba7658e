"""Simulated races (authenticated): start one, see its status, stop it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, status

from serving.deps import Authenticated, SettingsDep, SimulationsDep
from serving.models import SimulationIn, SimulationOut
from serving.simulations import RACE_ID_PATTERN, SimulationError

router = APIRouter(prefix="/simulations", tags=["simulations"], dependencies=[Authenticated])

SimId = Path(pattern=RACE_ID_PATTERN, description="the simulation id (its race id)")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SimulationOut,
             summary="Start a simulated race (`racewire simulate` in a subprocess)",
             responses={409: {"description": "a simulation with this race id is running"},
                        429: {"description": "too many simulations running"},
                        503: {"description": "no Kafka configured"}})
async def start(body: SimulationIn, manager: SimulationsDep, settings: SettingsDep) -> dict[str, Any]:
    if not settings.kafka_bootstrap or not settings.schema_registry_url:
        raise SimulationError("simulations produce to Kafka: set RACEWIRE_KAFKA_BOOTSTRAP and "
                              "RACEWIRE_SCHEMA_REGISTRY_URL (or run `racewire up`)", 503)
    sim = await manager.start(seed=body.seed, laps=body.laps, speed=body.speed, race_id=body.race_id,
                              follow=body.follow.upper() if body.follow else None)
    return sim.to_dict()


@router.get("", response_model=list[SimulationOut], summary="Simulations this server started")
async def list_simulations(manager: SimulationsDep) -> list[dict[str, Any]]:
    return [s.to_dict() for s in manager.runs.values()]


@router.get("/{sim_id}", response_model=SimulationOut, summary="Status of a simulation")
async def get(manager: SimulationsDep, sim_id: str = SimId) -> dict[str, Any]:
    return manager.get(sim_id).to_dict()


@router.delete("/{sim_id}", response_model=SimulationOut, summary="Stop a simulation")
async def stop(manager: SimulationsDep, sim_id: str = SimId) -> dict[str, Any]:
    return (await manager.stop(sim_id)).to_dict()
