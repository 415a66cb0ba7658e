"""Security and abuse (issue 11, findings 8 and 9): roles and credentials, trusted proxies, cost and
body limits, CORS, security headers, truthful health without internal addresses, and 4xx (never 5xx)
for out-of-range ids and numbers.

Every test runs the real app under uvicorn (``serve_in_thread``) against real Redis and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from dataflows.connectors.redis_sink import RedisWriter
from infra.bench.harness import serve_in_thread
from infra.services import free_port, free_ports
from schemas.redis_layout import RACES_KEY, flow_status_key
from schemas.settings import Settings
from serving.app import ServingOptions, create_app
from serving.replay import play, race_outputs, write_session

pytestmark = pytest.mark.integration

ADMIN_KEY = "adm-7f1c0b2e9d4a4c3e8b6f5a1d2c3b4a59"
OPERATOR_KEY = "op-2b9d8c7e6f5a4b3c2d1e0f9a8b7c6d5e"
TOKEN_SECRET = "token-secret-3e8b6f5a1d2c3b4a597f1c0b2e9d4a4c"
FAST = ServingOptions(rate_limit_per_s=0, sse_ping_s=1, sse_block_ms=500, sse_linger_s=0.5)
#: a port nothing listens on (connection refused at once)
DEAD = f"127.0.0.1:{free_port()}"


def _settings(redis_url: str, **kw: Any) -> Settings:
    return Settings(redis_url=redis_url, api_key=ADMIN_KEY,  # type: ignore[arg-type]
                    api_keys=f"{OPERATOR_KEY}:operator", token_secret=TOKEN_SECRET, **kw)


OPERATOR = {"X-API-Key": OPERATOR_KEY}


@pytest.fixture(scope="module")
def server(redis_url: str, stored: tuple[str, list[Any]]) -> Iterator[str]:
    app = create_app(_settings(redis_url, database_url=stored[0]), FAST)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


@pytest.fixture
def live_race(redis_url: str, redis_client: redis.Redis, unique_race_id: str) -> Iterator[str]:
    """A simulated race's first outputs in Redis (events included), under this test's own id."""
    session, outputs = race_outputs(unique_race_id, seed=5, laps=3)
    writer = RedisWriter(redis_url)
    write_session(writer, session)
    list(play(writer, outputs[: len(outputs) // 2]))
    try:
        yield unique_race_id
    finally:
        writer.client.hdel(RACES_KEY, unique_race_id)
        writer.close()


def _situation(cars: int = 6, lap: int = 20, total: int = 57) -> dict[str, Any]:
    compounds = ["MEDIUM", "SOFT", "HARD"]
    return {"circuit": "Bahrain Grand Prix", "lap": lap, "total_laps": total, "cars": [
        {"number": n, "code": f"C{n:02d}", "gap_s": 2.5 * i, "compound": compounds[i % 3], "tyre_age": 8,
         "recent_laps_s": [95.0 + 0.1 * i]} for i, n in enumerate(range(1, cars + 1))]}


# ------------------------------------------------------------------------------------ finding 9


def test_stream_ids_beyond_64_bits_are_422_not_500(http: httpx.Client, live_race: str) -> None:
    too_big = "18446744073709551616-0"  # 2**64: Redis refuses it
    r = http.get(f"/api/races/{live_race}/events", params={"after": too_big})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["query", "after"]
    assert http.get(f"/api/races/{live_race}/events", params={"after": "18446744073709551615-0"}).status_code == 200
    # the SSE resume uses the same parser: no whole-stream replay for an id it cannot place
    r = http.get(f"/api/races/{live_race}/stream", headers={"Last-Event-ID": too_big})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["header", "Last-Event-ID"]
    r = http.get(f"/api/races/{live_race}/stream", params={"after": f"1-{2**64}"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "after"], r.text


@pytest.mark.parametrize(("path", "params", "field"), [
    ("/api/races/r/standings", {"lap": 2**31}, "lap"),
    ("/api/races/r/laps", {"from_lap": 2**31}, "from_lap"),
    ("/api/races/r/laps", {"to_lap": 2**63}, "to_lap"),
    ("/api/races/r/laps", {"driver": 2**40}, "driver"),
    ("/api/history/races", {"offset": 2**63}, "offset"),
    ("/api/drivers/1/laps", {"offset": 2**63}, "offset"),
    ("/api/predictions/safety-car", {"race": "r", "lap": 2**31}, "lap"),
])
def test_out_of_range_numbers_are_422_naming_the_field(http: httpx.Client, path: str, params: dict[str, Any],
                                                        field: str) -> None:
    r = http.get(path, params=params)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][-1] == field, r.text


def test_standings_at_the_largest_valid_lap_is_a_404(http: httpx.Client) -> None:
    r = http.get("/api/races/r/standings", params={"lap": 1000})
    assert r.status_code == 404, r.text


# ------------------------------------------------------------------------------------ forwarded headers


def test_rotating_x_forwarded_for_does_not_bypass_the_rate_limit(redis_url: str) -> None:
    """No proxy is trusted unless configured: a client that invents X-Forwarded-For is still itself."""
    app = create_app(_settings(redis_url), ServingOptions(rate_limit_per_s=1, rate_limit_burst=3))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        codes = [client.get("/api/races", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
                 for i in range(6)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429, 429], codes


def test_a_trusted_proxy_names_the_client_and_cannot_be_spoofed_through(redis_url: str) -> None:
    """Behind a configured proxy, the client is the address the proxy appended: what the client put
    in front of it (rotating) does not give it fresh buckets; another real client has its own."""
    app = create_app(_settings(redis_url, trusted_proxies="127.0.0.1"),
                     ServingOptions(rate_limit_per_s=1, rate_limit_burst=3))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        codes = [client.get("/api/races", headers={"X-Forwarded-For": f"10.9.9.{i}, 203.0.113.7"}).status_code
                 for i in range(5)]
        other = client.get("/api/races", headers={"X-Forwarded-For": "203.0.113.8"}).status_code
    assert codes == [200, 200, 200, 429, 429] and other == 200, (codes, other)


# ------------------------------------------------------------------------------------ roles, keys, tokens


def _token(client: httpx.Client, key: str, **form: str) -> httpx.Response:
    return client.post("/api/auth/token", data={"grant_type": "client_credentials", "client_secret": key, **form})


@pytest.mark.parametrize(("path", "body"), [
    ("/api/simulations/race", {"situation": _situation(), "sims": 20}),
    ("/api/strategies/optimal", {"situation": _situation(), "driver": 2, "sims": 20}),
    ("/api/strategies/compare", {"situation": _situation(), "driver": 2, "sims": 20,
                                 "strategies": [{"stops": [{"lap": 30, "compound": "HARD"}]}]}),
])
def test_expensive_work_needs_the_operator_role(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    r = http.post(path, json=body)
    assert r.status_code == 401, r.text
    assert "X-API-Key" in r.json()["detail"] and "Bearer" in r.headers["WWW-Authenticate"]
    assert http.post(path, json=body, headers={"X-API-Key": "wrong-key-wrong-key"}).status_code == 401
    assert http.post(path, json=body, headers=OPERATOR).status_code == 200
    token = _token(http, OPERATOR_KEY).json()["access_token"]
    assert http.post(path, json=body, headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_tokens_are_60_minute_jwts_scoped_to_the_key_role(http: httpx.Client) -> None:
    import jwt

    r = _token(http, OPERATOR_KEY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600 and body["scope"] == "operator"
    claims = jwt.decode(body["access_token"], TOKEN_SECRET, algorithms=["HS256"], audience="racewire")
    assert claims["role"] == "operator" and claims["exp"] - claims["iat"] == 3600
    # HTTP Basic (client_id:client_secret) works too; an admin key may ask for less
    basic = base64.b64encode(f"ci:{ADMIN_KEY}".encode()).decode()
    r = http.post("/api/auth/token", data={"grant_type": "client_credentials", "scope": "operator"},
                  headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 200 and r.json()["scope"] == "operator", r.text
    # an operator key cannot get an admin token; a wrong key gets none; an unknown grant is named
    assert _token(http, OPERATOR_KEY, scope="admin").status_code == 400
    bad = _token(http, "not-a-key-at-all")
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    assert http.post("/api/auth/token", data={"grant_type": "password"}).json()["error"] == "unsupported_grant_type"


def test_expired_forged_and_underprivileged_tokens_are_refused(http: httpx.Client) -> None:
    import jwt

    now = int(time.time())
    claims = {"sub": "x", "role": "admin", "aud": "racewire", "iss": "racewire", "iat": now - 7200,
              "exp": now - 3600}
    expired = jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")
    forged = jwt.encode({**claims, "exp": now + 600}, "some-other-secret-of-enough-length", algorithm="HS256")
    none_alg = jwt.encode({**claims, "exp": now + 600}, None, algorithm="none")
    for token in (expired, forged, none_alg, "garbage"):
        r = http.get("/api/admin/keys", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, (token, r.text)
    operator = _token(http, OPERATOR_KEY).json()["access_token"]
    r = http.get("/api/admin/keys", headers={"Authorization": f"Bearer {operator}"})
    assert r.status_code == 403 and "admin" in r.json()["detail"], r.text
    r = http.get("/api/admin/keys", headers={"X-API-Key": ADMIN_KEY})
    assert r.status_code == 200, r.text
    listed = r.json()["keys"]
    assert {k["role"] for k in listed} == {"admin", "operator"}
    assert ADMIN_KEY not in r.text and OPERATOR_KEY not in r.text  # fingerprints only


def test_simulations_and_ingest_need_the_operator_role(http: httpx.Client) -> None:
    assert http.get("/api/simulations").status_code == 401
    assert http.get("/api/simulations", headers=OPERATOR).status_code == 200
    assert http.post("/api/events", json=[]).status_code == 401


# ------------------------------------------------------------------------------------ cost limits


def test_simulation_work_is_bounded_with_a_message_naming_the_limit(http: httpx.Client) -> None:
    body = {"situation": _situation(cars=30, lap=0, total=200), "sims": 20_000}
    r = http.post("/api/simulations/race", json=body, headers=OPERATOR)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "RACEWIRE_MAX_SIMULATION_WORK" in detail and "30 cars" in detail
    r = http.post("/api/strategies/optimal", json={**body, "driver": 1, "sims": 2000}, headers=OPERATOR)
    assert r.status_code == 422 and "RACEWIRE_MAX_SIMULATION_WORK" in r.json()["detail"], r.text


def test_graphql_depth_aliases_and_cost_are_limited(http: httpx.Client) -> None:
    aliases = " ".join(f"a{i}: races(first: 100) {{ id }}" for i in range(300))  # the 4.4 s, 6.4 MB
    r = http.post("/graphql", json={"query": f"{{ {aliases} }}"})
    assert r.status_code == 400, r.text[:300]
    assert "tokens" in json.dumps(r.json()["errors"])  # refused while parsing: over 2000 tokens
    aliases = " ".join(f"a{i}: races(first: 1) {{ id }}" for i in range(30))
    r = http.post("/graphql", json={"query": f"{{ {aliases} }}"})
    assert r.status_code == 400 and "aliases" in json.dumps(r.json()["errors"]), r.text[:300]
    deep = "{ races { drivers { raceId } drivers { raceId } } }"  # fine
    assert http.post("/graphql", json={"query": deep}).status_code == 200
    fragment = "fragment F on Query { races { id drivers { number } } }"
    nested = "{ " + " ".join(f"r{i}: races(first: 5000) {{ drivers {{ number }} }}" for i in range(5)) + " }"
    r = http.post("/graphql", json={"query": nested})
    assert r.status_code == 400 and "cost" in json.dumps(r.json()["errors"]), r.text[:300]
    r = http.post("/graphql", json={"query": fragment + " { ...F }"})
    assert r.status_code == 200, r.text[:300]


# ------------------------------------------------------------------------------------ bodies


def _raw(url: str, head: str, body: bytes = b"", timeout: float = 10.0) -> str:
    """Send a raw HTTP/1.1 request (headers, maybe a partial body); the status line of the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def test_credentials_are_checked_before_the_body_is_read(server: str) -> None:
    """Headers announcing 50 MB, and no body at all: the answer comes without waiting for it."""
    head = "POST /api/events HTTP/1.1\nHost: t\nContent-Type: application/json\nContent-Length: 50000000\n"
    assert " 401 " in _raw(server, head + "\n")
    assert " 401 " in _raw(server, head + "X-API-Key: wrong-key-wrong-key\n\n")
    assert " 413 " in _raw(server, head + f"X-API-Key: {OPERATOR_KEY}\n\n")


def test_bodies_are_limited_as_they_stream_in(server: str, http: httpx.Client) -> None:
    chunk = b"x" * 65536

    def chunks(n: int) -> Iterator[bytes]:
        for _ in range(n):
            yield chunk

    # chunked (no Content-Length): refused once the limit is passed
    r = http.post("/api/events", content=chunks(200), headers={**OPERATOR, "Content-Type": "application/json"})
    assert r.status_code == 413 and "RACEWIRE_MAX_BODY_BYTES" in r.json()["detail"], r.text
    # anonymous bodies have a smaller limit
    r = http.post("/api/predictions/degradation", content=b" " * 200_000, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "RACEWIRE_MAX_PUBLIC_BODY_BYTES" in r.json()["detail"], r.text
    r = http.post("/graphql", content=chunks(4), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text


# ------------------------------------------------------------------------------------ CORS and headers


def test_cors_allow_list(redis_url: str) -> None:
    allowed = "https://timing.example"
    app = create_app(_settings(redis_url, cors_origins=allowed), FAST)
    preflight = {"Access-Control-Request-Method": "GET"}
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        ok = client.options("/api/races", headers={"Origin": allowed, **preflight})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == allowed
        assert client.get("/api/races", headers={"Origin": allowed}).headers["access-control-allow-origin"] == allowed
        other = client.options("/api/races", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in other.headers
    # default: same origin only (no cross-origin grant at all)
    with serve_in_thread(create_app(_settings(redis_url), FAST)) as url:
        r = httpx.get(f"{url}/api/races", headers={"Origin": allowed})
        assert "access-control-allow-origin" not in r.headers


def test_security_headers_fit_the_page(http: httpx.Client) -> None:
    page = http.get("/")
    csp = page.headers["content-security-policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"):
        assert directive in csp, csp
    assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";")[0]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert "strict-transport-security" not in page.headers  # plain http: no HSTS
    api = http.get("/api/races")
    assert api.headers["x-content-type-options"] == "nosniff" and "content-security-policy" in api.headers
    docs = http.get("/docs")
    if "docs-static" in docs.text:  # Swagger UI served locally: its one inline script is allowed by hash
        assert "'sha256-" in docs.headers["content-security-policy"]


def test_hsts_only_behind_a_trusted_tls_proxy(redis_url: str) -> None:
    app = create_app(_settings(redis_url, trusted_proxies="127.0.0.0/8"), FAST)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        tls = client.get("/api/races", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
        assert tls.headers["strict-transport-security"].startswith("max-age=")
        assert "strict-transport-security" not in client.get("/api/races").headers
    with serve_in_thread(create_app(_settings(redis_url), FAST)) as url:  # no trusted proxy: the header is a lie
        r = httpx.get(f"{url}/api/races", headers={"X-Forwarded-Proto": "https"})
        assert "strict-transport-security" not in r.headers


def test_request_id_in_and_out(http: httpx.Client) -> None:
    rid = "8b0c7a7e1f0d4f6a9e2b3c4d5e6f7a8b"
    assert http.get("/api/races", headers={"X-Request-ID": rid}).headers["x-request-id"] == rid
    assert len(http.get("/api/races").headers["x-request-id"]) >= 32


# ------------------------------------------------------------------------------------ health


def test_health_tells_anonymous_callers_statuses_only(redis_url: str, tmp_path: Any) -> None:
    redis_port = DEAD.split(":")[1]
    kafka_port, pg_port = (str(port) for port in free_ports(2))
    settings = _settings(f"redis://127.0.0.1:{redis_port}/0", kafka_bootstrap=f"127.0.0.1:{kafka_port}",
                         database_url=f"postgresql://racewire@127.0.0.1:{pg_port}/none")
    with serve_in_thread(create_app(settings, FAST)) as url, httpx.Client(base_url=url, timeout=20) as client:
        anonymous = client.get("/api/health")
        assert anonymous.status_code == 503
        text = anonymous.text
        for secret in ("127.0.0.1", redis_port, kafka_port, pg_port, "redis://", "postgresql://"):
            assert secret not in text, (secret, text)
        body = anonymous.json()
        assert body["dependencies"]["redis"]["ok"] is False and body["dependencies"]["postgresql"]["ok"] is False
        detailed = client.get("/api/health", headers=OPERATOR).json()
        assert "error" in detailed["dependencies"]["redis"]
        assert client.get("/api/health/live").status_code == 200
        ready = client.get("/api/health/ready")
        assert ready.status_code == 503 and "127.0.0.1" not in ready.text


def test_ready_while_postgresql_can_answer_for_a_dead_redis(stored: tuple[str, list[Any]]) -> None:
    settings = _settings(f"redis://{DEAD}/0", database_url=stored[0])
    with serve_in_thread(create_app(settings, FAST)) as url, httpx.Client(base_url=url, timeout=20) as client:
        assert client.get("/api/health/live").status_code == 200
        ready = client.get("/api/health/ready")
        assert ready.status_code == 200, ready.text
        health = client.get("/api/health").json()
        assert health["dependencies"]["redis"]["ok"] is False
        assert health["dependencies"]["postgresql"]["ok"] is True
        assert health["status"] == "degraded"


def test_health_reports_the_dataflow_from_its_status_documents(http: httpx.Client, redis_client: redis.Redis,
                                                                unique_race_id: str) -> None:
    key = flow_status_key(90000 + int(unique_race_id[2:6], 16))  # a process id nobody else uses
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc = {"process": 0, "pid": 1, "started_at": now, "updated_at": now, "last_applied_age_s": 0.4,
           "records_read": 10, "records_applied": 9,
           "partitions": {"f1.timing.lap/0": {"offset": 10, "high": 12, "lag": 2}},
           "races": {unique_race_id: {"read": 10, "applied": 9, "rejected": 0, "last_applied_age_s": 0.4,
                                      "version": 3, "state_bytes": 100}}}
    redis_client.set(key, json.dumps(doc), ex=15)
    try:
        detailed = http.get("/api/health", headers=OPERATOR).json()["dependencies"]["dataflow"]
        assert detailed["ok"] is True and detailed["processes"] >= 1
        mine = detailed["races"][unique_race_id]
        assert mine["pending"] == 1 and mine["last_applied_age_s"] == 0.4
        anonymous = http.get("/api/health").json()["dependencies"]["dataflow"]
        assert set(anonymous) <= {"ok", "configured", "processes"}
    finally:
        redis_client.delete(key)


# ------------------------------------------------------------------------------------ logs


def test_log_lines_are_json_with_the_request_id(http: httpx.Client, capfd: pytest.CaptureFixture[str]) -> None:
    from infra.logs import configure

    configure(json=True, level="INFO")
    try:
        rid = "0f1e2d3c4b5a49788796a5b4c3d2e1f0"
        assert http.post("/api/events", json=[], headers={"X-Request-ID": rid}).status_code == 401
        logging.getLogger("racewire.test").info("outside a request", extra={"race_id": "r"})
        time.sleep(0.2)
    finally:
        configure(json=False, level="WARNING")
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    outside = next(x for x in lines if x["message"] == "outside a request")
    assert outside["race_id"] == "r" and outside["level"] == "INFO" and outside["logger"] == "racewire.test"
    assert any(x.get("request_id") == rid for x in lines), lines


# ------------------------------------------------------------------------------------ placeholder secrets


@pytest.mark.parametrize(("api_key", "token_secret"), [("replace-me", TOKEN_SECRET), (ADMIN_KEY, "")])
def test_placeholder_secrets_are_refused_outside_loopback(redis_url: str, api_key: str, token_secret: str) -> None:
    """`racewire serve` bound to a non-loopback address exits at once, naming the setting to fix (every
    kind of weak secret: tests/unit/test_serving_auth.py)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "RACEWIRE_REDIS_URL": redis_url, "RACEWIRE_API_KEY": api_key,
           "RACEWIRE_TOKEN_SECRET": token_secret, "RACEWIRE_API_KEYS": ""}
    proc = subprocess.Popen([sys.executable, "-m", "infra.serve_cli", "--host", "0.0.0.0", "--port", str(free_port())],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"serving started on 0.0.0.0 with a placeholder secret: {out[-500:]}")
    assert proc.returncode != 0
    wanted = "RACEWIRE_API_KEY" if api_key != ADMIN_KEY else "RACEWIRE_TOKEN_SECRET"
    assert wanted in out, out
