"""The route table: every resource's router, under ``/api`` (``/metrics`` at the root; ``/graphql`` is
added by :func:`serving.app.create_app`, its limits come from the settings)."""

from __future__ import annotations

from fastapi import APIRouter

from serving.routes import auth, drivers, health, history, ingest, races, simulations, strategy, stream

api_router = APIRouter(prefix="/api")
api_router.include_router(races.router)
api_router.include_router(stream.router)
api_router.include_router(drivers.router)
api_router.include_router(history.router)
api_router.include_router(ingest.router)
api_router.include_router(strategy.races)
api_router.include_router(strategy.router)  # before simulations: /simulations/race is a strategy route
api_router.include_router(simulations.router)
api_router.include_router(health.router)
api_router.include_router(auth.router)

root_router = APIRouter()
root_router.include_router(health.metrics_router)
