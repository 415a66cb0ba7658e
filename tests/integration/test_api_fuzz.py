"""Schemathesis against the app's OpenAPI document: no request may get a 5xx.

The app runs under uvicorn with real Redis (a live race written by the Redis sink), PostgreSQL (a
stored race), the embedded broker and racewire's schema registry, so every dependency is there and
a 5xx can only be a bug. Schemathesis's CLI runs twice, anonymous and with an admin key (every route,
the new ones included), positive and negative cases, a fixed seed and a bounded number of cases per
operation; the only check is ``not_a_server_error``. The SSE stream is left out (a 200 never ends; its
bad inputs are covered in test_serving.py / test_serving_security.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from dataflows.connectors.redis_sink import RedisWriter
from infra.bench.harness import serve_in_thread
from schemas.redis_layout import RACES_KEY
from schemas.settings import Settings
from serving.app import ServingOptions, create_app
from serving.replay import play, race_outputs, write_session

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN_KEY = "fuzz-admin-key-5d0c2b7a9e8f4a31b6c7"
#: cases per operation and mode; ~45 operations x 2 runs keep it to a minute or two of CI time
MAX_EXAMPLES = int(os.environ.get("RACEWIRE_FUZZ_EXAMPLES", "25"))
SEED = 11


@pytest.fixture
def live_race(redis_url: str, redis_client: redis.Redis, unique_race_id: str) -> Iterator[str]:
    session, outputs = race_outputs(unique_race_id, seed=3, laps=3)
    writer = RedisWriter(redis_url)
    write_session(writer, session)
    list(play(writer, outputs[: len(outputs) // 2]))
    try:
        yield unique_race_id
    finally:
        writer.client.hdel(RACES_KEY, unique_race_id)
        writer.close()


def _run(url: str, report: Path, races: list[str], headers: list[str]) -> dict[str, Any]:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.integration.schemathesis_hooks",
           "RACEWIRE_FUZZ_RACES": ",".join(races)}
    args = [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
            "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--generation-database", "none",
            "--exclude-path", "/api/races/{race_id}/stream", "--request-timeout", "60", "--workers", "1",
            "--no-color", "--report", "junit", "--report-junit-path", str(report), *headers]
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=root, timeout=600)
    tail = result.stdout[-4000:] + result.stderr[-2000:]
    counts = re.search(r"Test cases:\s+(\d+) generated, (\d+) passed", result.stdout)
    return {"rc": result.returncode, "out": tail, "cases": int(counts.group(1)) if counts else None,
            "passed": int(counts.group(2)) if counts else None}


def test_no_request_gets_a_5xx(tmp_path: Path, redis_url: str, stored: tuple[str, list[Any]], kafka_bootstrap: str,
                               registry_url: str, live_race: str) -> None:
    settings = Settings(redis_url=redis_url, database_url=stored[0], kafka_bootstrap=kafka_bootstrap,  # type: ignore[arg-type]
                        schema_registry_url=registry_url, api_key=ADMIN_KEY,
                        max_simulation_work=200_000)  # simulations and strategy search stay small
    # started simulations exit at once (they would produce races to the broker)
    options = ServingOptions(rate_limit_per_s=0, simulate_command=(sys.executable, "-c", "pass"))
    runs = {}
    with serve_in_thread(create_app(settings, options)) as url:
        for name, headers in (("anonymous", []), ("admin", ["-H", f"X-API-Key: {ADMIN_KEY}"])):
            runs[name] = _run(url, tmp_path / f"{name}.xml", [live_race, "r"], headers)
    for name, run in runs.items():
        assert run["rc"] == 0, f"schemathesis ({name}) found a 5xx:\n{run['out']}"
        assert run["cases"] and run["cases"] == run["passed"], run["out"]
    print(json.dumps({name: {"cases": run["cases"], "server_errors": 0} for name, run in runs.items()}))
