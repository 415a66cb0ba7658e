"""Schemathesis hooks for tests/integration/test_api_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

Random race ids almost never name a stored race, so routes would only ever answer 404: path
``race_id`` and query ``race`` values are drawn half of the time from the races the test stored
(``RACEWIRE_FUZZ_RACES``, comma-separated: a live one in Redis, a finished one in PostgreSQL).
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

RACES = [r for r in os.environ.get("RACEWIRE_FUZZ_RACES", "").split(",") if r]


def _with_races(values: dict[str, Any] | None, name: str) -> Any:
    if not values or name not in values or not RACES:
        return st.just(values)
    return st.one_of(st.just(values), st.sampled_from(RACES).map(lambda race: {**values, name: race}))


@schemathesis.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
    return _with_races(path_parameters, "race_id")


@schemathesis.hook
def flatmap_query(context: Any, query: dict[str, Any]) -> Any:
    return _with_races(query, "race")
