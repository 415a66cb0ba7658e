"""racewire's schema registry over HTTP, with racewire's codec and the standard Confluent clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from infra.registry import (
    CONTENT_TYPE,
    PortInUseError,
    RegistryDataError,
    RegistryServer,
)
from infra.services import free_port
from schemas.codec import SCHEMA_FILES, Codec, make_registry_client, schema_text, subject
from schemas.model import (
    CarStatus,
    ClassifiedCar,
    DeadLetter,
    EventType,
    FastestLap,
    Hero,
    Leaderboard,
    LeaderboardRow,
    RaceEvent,
    TrackStatus,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
LAP_SUBJECT = "f1.timing.lap-value"
JSON_HEADERS = {"Content-Type": CONTENT_TYPE}

OUTPUT_SAMPLES: dict[str, Any] = {
    "f1.race.leaderboard": Leaderboard(
        race_id="r1",
        version=99,
        ts_ms=5_400_000,
        lap=57,
        total_laps=57,
        track_status=TrackStatus.GREEN,
        finished=True,
        final=False,
        rows=[
            LeaderboardRow(
                1,
                16,
                "LEC",
                "Ferrari",
                "E8002D",
                57,
                57.0,
                CarStatus.FINISHED,
                1,
                last_lap_ms=95_000,
                best_lap_ms=94_000,
                compound="HARD",
                tyre_age=20,
                pit_count=1,
                positions_gained_last_lap=1,
            ),
            LeaderboardRow(
                2, 1, "VER", "Red Bull Racing", "3671C6", 56, 56.5, CarStatus.RUNNING, 2, gap_laps=1, interval_laps=1
            ),
        ],
        fastest_lap=FastestLap(1, "VER", 40, 93_000, 4_000_000),
        hero=Hero(16, "LEC", 57, 95_000, 1, False),
    ),
    "f1.race.events": RaceEvent(
        event_id="ev-class-r1",
        race_id="r1",
        type=EventType.CLASSIFICATION,
        ts_ms=5_400_000,
        lap=57,
        classification=[
            ClassifiedCar(1, 16, "LEC", 57, "Finished", 5_400_000),
            ClassifiedCar(2, 1, "VER", 56, "+1 Lap", gap_laps=1),
        ],
        message="Final classification",
    ),
    "f1.deadletter": DeadLetter(
        source_topic="f1.timing.lap",
        reason="corrupt Avro body",
        error_type="DECODE",
        step="decode-input",
        received_at=datetime(2024, 3, 2, 15, 1, 2, 345_000, tzinfo=UTC),
        key=b"r1:16",
        value=b"\x00\x00\x00\x00\x02\xff",
        partition=2,
        offset=41,
        race_id="r1",
    ),
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path / "data") as registry:
        yield registry


@pytest.fixture
def http(server: RegistryServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as client:
        yield client


def lap_schema(**extra_field: Any) -> str:
    schema = json.loads(schema_text("f1.timing.lap"))
    if extra_field:
        schema["fields"].append(extra_field)
    return json.dumps(schema)


# ------------------------------------------------------------------------- codec, restart


def test_ids_and_versions_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with RegistryServer(data) as first:
        ids = Codec(make_registry_client(first.url)).register_all()
        port = first.port
    assert sorted(ids.values()) == list(range(1, len(SCHEMA_FILES) + 1))
    assert (data / "registry" / "registry.json").is_file()
    assert [p.name for p in (data / "registry").iterdir() if p.name.endswith(".tmp")] == []

    with RegistryServer(data, port=port) as second:  # same data, same port
        assert second.url == f"http://127.0.0.1:{port}"
        assert Codec(make_registry_client(second.url)).register_all() == ids
        client = make_registry_client(second.url)
        for topic, schema_id in ids.items():
            assert client.get_versions(subject(topic)) == [1]
            latest = client.get_latest_version(subject(topic))
            assert (latest.schema_id, latest.version) == (schema_id, 1)
            served = client.get_schema(schema_id).schema_str
            assert served is not None
            assert json.loads(served) == json.loads(schema_text(topic))


def test_changes_after_a_restart_continue_the_numbering(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with RegistryServer(data) as first:
        Codec(make_registry_client(first.url)).register_all()
    with RegistryServer(data) as second:
        client = make_registry_client(second.url)
        v2 = lap_schema(name="gap_ms", type=["null", "long"], default=None)
        new_id = client.register_schema(LAP_SUBJECT, Schema(v2, "AVRO"))
        assert new_id == len(SCHEMA_FILES) + 1
        assert client.get_versions(LAP_SUBJECT) == [1, 2]


# ------------------------------------------------------------------- standard Confluent serdes


@pytest.mark.parametrize("topic", list(OUTPUT_SAMPLES))
def test_standard_deserializer_reads_codec_output(server: RegistryServer, topic: str) -> None:
    record = OUTPUT_SAMPLES[topic]
    raw = Codec(make_registry_client(server.url)).encode(topic, record)
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": server.url}))

    value = deserializer(raw, SerializationContext(topic, MessageField.VALUE))

    assert value == record.to_dict()
    assert value == Codec(make_registry_client(server.url)).decode(raw)[1]


@pytest.mark.parametrize("topic", list(OUTPUT_SAMPLES))
def test_standard_serializer_output_decodes_with_codec(server: RegistryServer, topic: str) -> None:
    codec = Codec(make_registry_client(server.url))
    ids = codec.register_all()
    record = OUTPUT_SAMPLES[topic]
    serializer = AvroSerializer(SchemaRegistryClient({"url": server.url}), schema_text(topic))

    raw = serializer(record.to_dict(), SerializationContext(topic, MessageField.VALUE))

    assert raw is not None
    assert raw[1:5] == ids[topic].to_bytes(4, "big")  # registering it again found the same id
    assert codec.decode(raw) == (topic, record.to_dict())
    assert Codec(make_registry_client(server.url)).decode_record(raw) == record


def test_confluent_client_calls(server: RegistryServer) -> None:
    client = SchemaRegistryClient({"url": server.url})
    schema_id = client.register_schema(LAP_SUBJECT, Schema(schema_text("f1.timing.lap"), "AVRO"))

    assert client.get_subjects() == [LAP_SUBJECT]
    assert client.get_schema_types() == ["AVRO"]
    found = client.lookup_schema(LAP_SUBJECT, Schema(schema_text("f1.timing.lap"), "AVRO"))
    assert (found.schema_id, found.version, found.subject) == (schema_id, 1, LAP_SUBJECT)
    assert client.get_version(LAP_SUBJECT, 1).schema_id == schema_id
    assert client.get_subjects_by_schema_id(schema_id) == [LAP_SUBJECT]
    assert [(v.subject, v.version) for v in client.get_schema_versions(schema_id)] == [(LAP_SUBJECT, 1)]
    assert client.get_compatibility() == "BACKWARD"
    assert client.set_compatibility(LAP_SUBJECT, "FULL") == {"compatibility": "FULL"}
    assert client.get_compatibility(LAP_SUBJECT) == "FULL"
    compatible = Schema(lap_schema(name="gap_ms", type=["null", "long"], default=None), "AVRO")
    assert client.test_compatibility(LAP_SUBJECT, compatible) is True
    assert client.test_compatibility(LAP_SUBJECT, Schema(lap_schema(name="x", type="int"))) is False
    assert client.test_compatibility_all_versions(LAP_SUBJECT, compatible) is True

    assert client.delete_version(LAP_SUBJECT, 1) == 1
    with pytest.raises(SchemaRegistryError) as err:
        client.get_versions(LAP_SUBJECT)
    assert err.value.error_code == 40401
    assert client.delete_subject(LAP_SUBJECT, permanent=True) == [1]
    assert client.get_subjects() == []


# ----------------------------------------------------------------------------- REST, errors


def test_incompatible_schema_gets_409(http: httpx.Client) -> None:
    assert (
        http.post(f"/subjects/{LAP_SUBJECT}/versions", headers=JSON_HEADERS, json={"schema": lap_schema()}).status_code
        == 200
    )
    r = http.post(
        f"/subjects/{LAP_SUBJECT}/versions",
        headers=JSON_HEADERS,
        json={"schema": lap_schema(name="gap_ms", type="long")},
    )

    assert r.status_code == 409
    assert r.headers["content-type"] == CONTENT_TYPE
    assert r.json()["error_code"] == 409
    assert "gap_ms" in r.json()["message"]
    assert http.get(f"/subjects/{LAP_SUBJECT}/versions").json() == [1]

    # ... and is accepted once the subject's level allows it
    assert http.put(f"/config/{LAP_SUBJECT}", json={"compatibility": "NONE"}).json() == {"compatibility": "NONE"}
    r = http.post(f"/subjects/{LAP_SUBJECT}/versions", json={"schema": lap_schema(name="gap_ms", type="long")})
    assert (r.status_code, r.json()) == (200, {"id": 2})


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/subjects/no-such-subject/versions", 404, 40401),
        ("GET", "/subjects/no-such-subject/versions/latest", 404, 40401),
        ("DELETE", "/subjects/no-such-subject", 404, 40401),
        ("GET", f"/subjects/{LAP_SUBJECT}/versions/7", 404, 40402),
        ("GET", f"/subjects/{LAP_SUBJECT}/versions/0", 422, 42202),
        ("GET", f"/subjects/{LAP_SUBJECT}/versions/one", 422, 42202),
        ("GET", "/schemas/ids/999", 404, 40403),
        ("GET", "/schemas/ids/999/versions", 404, 40403),
        ("GET", f"/config/{LAP_SUBJECT}", 404, 40408),
        ("GET", "/no/such/route", 404, 404),
    ],
)
def test_errors_are_confluent_shaped(http: httpx.Client, method: str, path: str, status: int, code: int) -> None:
    http.post(f"/subjects/{LAP_SUBJECT}/versions", json={"schema": lap_schema()})

    r = http.request(method, path)

    assert r.status_code == status
    assert r.headers["content-type"] == CONTENT_TYPE
    body = r.json()
    assert body["error_code"] == code
    assert isinstance(body["message"], str)
    assert body["message"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"schema": '{"type": "record", "name": "A"}'}, "Invalid schema"),
        ({"schema": "not json"}, "not JSON"),
        (
            {"schema": '{"type": "record", "name": "A", "fields": [{"name": "x", "type": "int", "default": "zero"}]}'},
            "Default value",
        ),
        ({"schema": '{"type": "object"}', "schemaType": "JSON"}, "AVRO schemas only"),
        ({"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"}, "AVRO schemas only"),
        (
            {"schema": '"string"', "references": [{"name": "a", "subject": "b", "version": 1}]},
            "references are not supported",
        ),
        ({"schemaType": "AVRO"}, '"schema" string'),
    ],
    ids=["no-fields", "not-json", "bad-default", "json-schema", "protobuf", "references", "no-schema"],
)
def test_invalid_schemas_get_422(http: httpx.Client, body: dict[str, Any], needle: str) -> None:
    r = http.post("/subjects/s-value/versions", headers=JSON_HEADERS, json=body)
    assert r.status_code == 422
    assert r.json()["error_code"] == 42201
    assert needle in r.json()["message"]


def test_unknown_subject_gets_404_40401(http: httpx.Client) -> None:
    r = http.get("/subjects/f1.nothing-value/versions")
    assert r.status_code == 404
    assert r.json()["error_code"] == 40401
    r = http.post("/subjects/f1.nothing-value", json={"schema": lap_schema()})
    assert (r.status_code, r.json()["error_code"]) == (404, 40401)


def test_register_is_idempotent_and_ids_are_global(http: httpx.Client) -> None:
    compact = json.dumps(json.loads(lap_schema()), separators=(",", ":"))
    first = http.post(f"/subjects/{LAP_SUBJECT}/versions", json={"schema": lap_schema()}).json()
    again = http.post(f"/subjects/{LAP_SUBJECT}/versions", json={"schema": compact}).json()
    other = http.post("/subjects/laps-archive-value/versions", json={"schema": compact}).json()

    assert first == again == other == {"id": 1}
    assert http.get(f"/subjects/{LAP_SUBJECT}/versions").json() == [1]
    assert http.get("/schemas/ids/1/subjects").json() == ["f1.timing.lap-value", "laps-archive-value"]
    assert http.get("/schemas/ids/1/versions").json() == [
        {"subject": "f1.timing.lap-value", "version": 1},
        {"subject": "laps-archive-value", "version": 1},
    ]


def test_reads(http: httpx.Client) -> None:
    http.post(f"/subjects/{LAP_SUBJECT}/versions", json={"schema": lap_schema()})
    v2 = lap_schema(name="gap_ms", type=["null", "long"], default=None)
    assert http.post(f"/subjects/{LAP_SUBJECT}/versions", json={"schema": v2}).json() == {"id": 2}

    assert http.get("/").json() == {}
    assert http.get("/schemas/types").json() == ["AVRO"]
    assert http.get("/subjects").json() == [LAP_SUBJECT]
    assert http.get("/subjects", params={"subjectPrefix": "f1.race"}).json() == []
    assert http.get(f"/subjects/{LAP_SUBJECT}/versions").json() == [1, 2]
    latest = http.get(f"/subjects/{LAP_SUBJECT}/versions/latest").json()
    assert {k: latest[k] for k in ("subject", "version", "id")} == {"subject": LAP_SUBJECT, "version": 2, "id": 2}
    assert json.loads(latest["schema"]) == json.loads(v2)
    assert http.get(f"/subjects/{LAP_SUBJECT}/versions/-1").json()["version"] == 2
    assert http.get(f"/subjects/{LAP_SUBJECT}/versions/1").json()["id"] == 1
    raw = http.get(f"/subjects/{LAP_SUBJECT}/versions/1/schema")
    assert raw.json() == json.loads(lap_schema())
    assert http.get("/schemas/ids/2").json() == {"schema": latest["schema"]}
    assert http.get("/schemas/ids/2", params={"subject": "any-value"}).json()["schema"]
    assert http.get("/schemas/ids/2/schema").json() == json.loads(v2)
    assert len(http.get("/schemas").json()) == 2
    assert http.get(f"/subjects/{LAP_SUBJECT}/versions/1/referencedby").json() == []
    assert http.get("/mode").json() == {"mode": "READWRITE"}
    found = http.post(f"/subjects/{LAP_SUBJECT}", json={"schema": lap_schema()}).json()
    assert (found["id"], found["version"]) == (1, 1)
    missing = http.post(f"/subjects/{LAP_SUBJECT}", json={"schema": lap_schema(name="other", type="int", default=0)})
    assert (missing.status_code, missing.json()["error_code"]) == (404, 40403)


def test_plain_json_and_untyped_bodies_are_accepted(http: httpx.Client) -> None:
    body = json.dumps({"schema": lap_schema()})
    for content_type in ("application/json", "application/octet-stream", None):
        headers = {"Content-Type": content_type} if content_type else {}
        r = http.post(f"/subjects/{LAP_SUBJECT}/versions", content=body, headers=headers)
        assert (r.status_code, r.json()) == (200, {"id": 1})
    r = http.post(
        f"/subjects/{LAP_SUBJECT}/versions", content="{not json", headers={"Content-Type": "application/json"}
    )
    assert (r.status_code, r.json()["error_code"]) == (400, 400)


def test_config(http: httpx.Client) -> None:
    assert http.get("/config").json() == {"compatibilityLevel": "BACKWARD"}
    assert http.put("/config", json={"compatibility": "full_transitive"}).json() == {"compatibility": "FULL_TRANSITIVE"}
    assert http.get("/config").json() == {"compatibilityLevel": "FULL_TRANSITIVE"}
    r = http.put("/config", json={"compatibility": "SIDEWAYS"})
    assert (r.status_code, r.json()["error_code"]) == (422, 42203)

    assert http.get("/config/s-value", params={"defaultToGlobal": "true"}).json() == {
        "compatibilityLevel": "FULL_TRANSITIVE"
    }
    assert http.put("/config/s-value", json={"compatibility": "NONE"}).status_code == 200
    assert http.get("/config/s-value").json() == {"compatibilityLevel": "NONE"}
    assert http.delete("/config/s-value").json() == {"compatibilityLevel": "NONE"}
    assert http.get("/config/s-value").json()["error_code"] == 40408
    assert http.delete("/config").json() == {"compatibilityLevel": "FULL_TRANSITIVE"}
    assert http.get("/config").json() == {"compatibilityLevel": "BACKWARD"}


def test_transitive_levels_check_every_live_version(http: httpx.Client) -> None:
    subject_ = "t-value"
    v1 = '{"type": "record", "name": "T", "fields": [{"name": "a", "type": "int"}]}'
    v2 = '{"type": "record", "name": "T", "fields": []}'  # drops a: BACKWARD ok
    v3 = (
        '{"type": "record", "name": "T", "fields": [{"name": "a", "type": "string", '
        '"default": ""}]}'
    )  # a comes back as a string: reads v2 data, not v1 data
    for schema in (v1, v2):
        assert http.post(f"/subjects/{subject_}/versions", json={"schema": schema}).is_success
    url = f"/compatibility/subjects/{subject_}/versions"
    assert http.post(f"{url}/latest", json={"schema": v3}).json() == {"is_compatible": True}
    verbose = http.post(f"{url}/1", params={"verbose": "true"}, json={"schema": v3}).json()
    assert verbose["is_compatible"] is False
    assert "TYPE_MISMATCH" in verbose["messages"][0]

    http.put(f"/config/{subject_}", json={"compatibility": "BACKWARD_TRANSITIVE"})
    assert http.post(url, json={"schema": v3}).json() == {"is_compatible": False}
    r = http.post(f"/subjects/{subject_}/versions", json={"schema": v3})
    assert (r.status_code, r.json()["error_code"]) == (409, 409)
    assert "version 1" in r.json()["message"]
    http.put(f"/config/{subject_}", json={"compatibility": "BACKWARD"})
    assert http.post(f"/subjects/{subject_}/versions", json={"schema": v3}).json() == {"id": 3}


def test_compatibility_with_an_empty_subject(http: httpx.Client) -> None:
    url = "/compatibility/subjects/new-value/versions"
    assert http.post(f"{url}/latest", json={"schema": lap_schema()}).json() == {"is_compatible": True}
    r = http.post(f"{url}/1", json={"schema": lap_schema()})
    assert (r.status_code, r.json()["error_code"]) == (404, 40401)


def test_soft_and_permanent_deletes(http: httpx.Client) -> None:
    v2 = lap_schema(name="gap_ms", type=["null", "long"], default=None)
    http.post(f"/subjects/{LAP_SUBJECT}/versions", json={"schema": lap_schema()})
    http.post(f"/subjects/{LAP_SUBJECT}/versions", json={"schema": v2})

    r = http.delete(f"/subjects/{LAP_SUBJECT}/versions/1", params={"permanent": "true"})
    assert r.json()["error_code"] == 40407  # soft delete first
    assert http.delete(f"/subjects/{LAP_SUBJECT}/versions/1").json() == 1
    assert http.delete(f"/subjects/{LAP_SUBJECT}/versions/1").json()["error_code"] == 40406
    assert http.get(f"/subjects/{LAP_SUBJECT}/versions").json() == [2]
    assert http.get(f"/subjects/{LAP_SUBJECT}/versions", params={"deleted": True}).json() == [1, 2]
    assert http.get(f"/subjects/{LAP_SUBJECT}/versions/1").json()["error_code"] == 40402
    assert http.get(f"/subjects/{LAP_SUBJECT}/versions/1", params={"deleted": True}).json()["id"] == 1
    assert http.get("/schemas/ids/1").status_code == 200  # old data stays readable

    assert http.delete(f"/subjects/{LAP_SUBJECT}", params={"permanent": True}).json()["error_code"] == 40405
    assert http.delete(f"/subjects/{LAP_SUBJECT}").json() == [2]
    assert http.delete(f"/subjects/{LAP_SUBJECT}").json()["error_code"] == 40404
    assert http.get("/subjects").json() == []
    assert http.get("/subjects", params={"deleted": True}).json() == [LAP_SUBJECT]

    # registering again after a soft delete: same id, next version number
    assert http.post(f"/subjects/{LAP_SUBJECT}/versions", json={"schema": v2}).json() == {"id": 2}
    assert http.get(f"/subjects/{LAP_SUBJECT}/versions").json() == [3]

    http.delete(f"/subjects/{LAP_SUBJECT}")
    assert http.delete(f"/subjects/{LAP_SUBJECT}", params={"permanent": True}).json() == [1, 2, 3]
    assert http.get("/subjects", params={"deleted": True}).json() == []
    # ids are never reused
    other = '{"type": "record", "name": "Other", "fields": []}'
    assert http.post("/subjects/o-value/versions", json={"schema": other}).json() == {"id": 3}


def test_concurrent_registrations_agree(server: RegistryServer) -> None:
    def register(i: int) -> int:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
            r = client.post(f"/subjects/{LAP_SUBJECT}/versions", json={"schema": lap_schema()})
            return int(r.json()["id"])

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(register, range(32)))
    assert ids == {1}
    assert httpx.get(f"{server.url}/subjects/{LAP_SUBJECT}/versions", trust_env=False).json() == [1]


# ------------------------------------------------------------------------- server lifecycle


def test_port_in_use_names_the_port(server: RegistryServer, tmp_path: Path) -> None:
    other = RegistryServer(tmp_path / "other", port=server.port)
    with pytest.raises(PortInUseError) as err:
        other.start()
    assert str(server.port) in str(err.value)
    assert "RACEWIRE_REGISTRY_PORT" in str(err.value)
    other.stop()


def test_two_registries_cannot_share_a_data_dir(server: RegistryServer) -> None:
    with pytest.raises(RegistryDataError, match="another schema registry"):
        RegistryServer(server.data_dir).start()


def test_corrupt_state_is_reported(tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "registry.json").write_text("{oops")
    with pytest.raises(RegistryDataError, match=r"registry\.json"):
        RegistryServer(tmp_path).start()


def _cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "registry", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = _cli("--port", str(port), "--data-dir", str(tmp_path))
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                if httpx.get(f"{url}/subjects", trust_env=False).json() == []:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the registry did not come up"
                time.sleep(0.1)
        assert Codec(make_registry_client(url)).register_all()["f1.race.session"] == 1
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"listening on {url}" in out
    assert (tmp_path / "registry" / "registry.json").is_file()


def test_cli_port_in_use_exits_2(server: RegistryServer, tmp_path: Path) -> None:
    proc = _cli("--port", str(server.port), "--data-dir", str(tmp_path))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"port {server.port}" in err
