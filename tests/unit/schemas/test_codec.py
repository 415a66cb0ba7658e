"""The codec: every record type survives Confluent-framed Avro, and bad bytes fail with a class.

Pure: the registry is the Confluent client's in-process ``mock://`` registry.
"""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from schemas.codec import (
    INPUT_TOPICS,
    OUTPUT_TOPICS,
    SCHEMA_FILES,
    Codec,
    CodecError,
    make_registry_client,
    schema_text,
    subject,
)
from schemas.model import (
    ALL_TYPES,
    CarStatus,
    ClassifiedCar,
    Commentary,
    Control,
    ControlKind,
    DeadLetter,
    Driver,
    EventType,
    FastestLap,
    Hero,
    Lap,
    Leaderboard,
    LeaderboardRow,
    OvertakeKind,
    RaceEvent,
    Recommendation,
    Session,
    SessionKind,
    Stint,
    Telemetry,
    TrackPoint,
    TrackStatus,
    Weather,
    WeatherNow,
)

START = datetime(2024, 3, 2, 15, 0, tzinfo=UTC)
CEST = timezone(timedelta(hours=2))

# Each record is built with as many optional parts filled in as the type has, and values that
# Avro keeps exactly (floats of type "float" are binary fractions, times are whole milliseconds).
ROW_LEC = LeaderboardRow(
    position=1,
    driver_number=16,
    code="LEC",
    team="Ferrari",
    team_colour="E8002D",
    laps=57,
    progress=57.0,
    status=CarStatus.FINISHED,
    timing_position=1,
    last_lap_ms=95_123,
    best_lap_ms=94_001,
    compound="HARD",
    tyre_age=22,
    pit_count=1,
    positions_gained_last_lap=0,
)
ROW_VER = LeaderboardRow(
    position=2,
    driver_number=1,
    code="VER",
    team="Red Bull Racing",
    team_colour="3671C6",
    laps=56,
    progress=56.75,
    status=CarStatus.RUNNING,
    timing_position=2,
    gap_ms=None,
    gap_laps=1,
    interval_ms=None,
    interval_laps=1,
    last_lap_ms=None,
    compound=None,
)

SAMPLES: dict[str, list[Any]] = {
    "f1.race.session": [
        Session(
            event_id="session-r1",
            race_id="r1",
            name="Bahrain Grand Prix",
            circuit="Sakhir",
            total_laps=57,
            track_length_m=5412,
            start_time=START,
            drivers=[
                Driver(16, "LEC", "Charles Leclerc", "Ferrari", "E8002D"),
                Driver(1, "VER", "Max Verstappen", "Red Bull Racing"),
            ],
            grid=[16, 1],
            track_outline=[TrackPoint(0.0, 0.0), TrackPoint(120.5, -33.25), TrackPoint(80.0, 12.0)],
            pit_loss_ms=22_500,
            source="replay",
        ),
        Session("session-r2", "r2", "Sim", "Simring", 3, 4000, START, drivers=[]),
    ],
    "f1.timing.lap": [
        Lap(
            event_id="lap-r1-16-12",
            race_id="r1",
            driver_number=16,
            lap=12,
            crossing_ms=1_180_456,
            lap_time_ms=96_789,
            sector1_ms=31_000,
            sector2_ms=40_000,
            sector3_ms=25_789,
            pit_in=True,
            pit_out=False,
            pit_lane_ms=None,
            compound="MEDIUM",
            tyre_age=12,
            track_status=TrackStatus.VSC,
            deleted=True,
        ),
        Lap("lap-r1-1-1", "r1", 1, 1, 101_000),
    ],
    "f1.telemetry.car": [
        Telemetry(
            event_id="tel-r1-16-1000",
            race_id="r1",
            driver_number=16,
            ts_ms=1_000,
            lap=1,
            progress=0.125,
            x=-512.75,
            y=1033.5,
            speed_kph=287.5,
            rpm=11_500,
            gear=7,
            throttle=99.5,
            brake=False,
            drs=True,
            in_pit=False,
        ),
    ],
    "f1.race.control": [
        Control("ctl-1", "r1", 5_000, ControlKind.TRACK_STATUS, "SAFETY CAR DEPLOYED", TrackStatus.SC, None, 14),
        Control("ctl-2", "r1", 6_000, ControlKind.RETIREMENT, "CAR 1 RETIRED", None, 1, 15),
        Control("ctl-3", "r1", 0, ControlKind.RACE_START),
        Control("ctl-4", "r1", 60_000, ControlKind.PART_END, "Q1 ends", part=1),
        Control("ctl-5", "r1", 61_000, ControlKind.CLOCK, "Clock 17:59 running", remaining_ms=1_079_000,
                clock_running=True),
    ],
    "f1.weather": [
        Weather("w-1", "r1", 60_000, 27.9, 45.2, 50.0, 928.4, 2.4, 23, False),
        Weather("w-2", "r1", 120_000, rainfall=True),
    ],
    "f1.race.leaderboard": [
        Leaderboard(
            race_id="r1",
            version=1234,
            ts_ms=5_400_000,
            lap=57,
            total_laps=57,
            track_status=TrackStatus.GREEN,
            finished=True,
            final=True,
            rows=[ROW_LEC, ROW_VER],
            fastest_lap=FastestLap(1, "VER", 44, 93_456, 4_200_000),
            hero=Hero(16, "LEC", 57, 95_123, 2, True),
            reason="telemetry",
        ),
        Leaderboard("r1", 1, 0, 0, 57, TrackStatus.RED, False, False, rows=[]),
        Leaderboard("q1", 7, 1_500_000, 9, 9, TrackStatus.GREEN, False, False, rows=[],
                    session_type=SessionKind.QUALIFYING, part=2, cut=10, clock_remaining_ms=600_000,
                    clock_ts_ms=1_400_000, clock_running=True,
                    weather=WeatherNow(1_440_000, 27.9, 45.2, 50.0, 928.4, 2.4, 23, False)),
    ],
    "f1.race.events": [
        RaceEvent(
            event_id="ev-classification-r1",
            race_id="r1",
            type=EventType.CLASSIFICATION,
            ts_ms=5_400_000,
            lap=57,
            message="Final classification",
            classification=[
                ClassifiedCar(1, 16, "LEC", 57, "Finished", time_ms=5_400_000),
                ClassifiedCar(2, 1, "VER", 56, "+1 Lap", gap_laps=1),
                ClassifiedCar(3, 44, "HAM", 30, "Retired", None, None, 27),
            ],
        ),
        RaceEvent(
            event_id="ev-ot-r1-12-16-1",
            race_id="r1",
            type=EventType.OVERTAKE,
            ts_ms=1_180_000,
            lap=12,
            driver_number=16,
            code="LEC",
            other_driver_number=1,
            other_code="VER",
            overtake_kind=OvertakeKind.ON_TRACK,
            under_safety_car=False,
            position=1,
            positions_gained=1,
            track_status=TrackStatus.YELLOW,
            provisional=True,
            message="LEC passes VER for the lead",
        ),
        RaceEvent(
            "ev-pit", "r1", EventType.PIT_STOP, 1_200_000, 13, driver_number=1, pit_lane_ms=22_345, lap_time_ms=110_000
        ),
    ],
    "f1.driver.stints": [
        Stint(
            race_id="r1",
            driver_number=16,
            stint=2,
            compound="HARD",
            start_lap=20,
            end_lap=40,
            length=21,
            tyre_age_start=0,
            laps_used=18,
            open=False,
            median_pace_ms=95_321,
            degradation_ms_per_lap=42.125,
            degradation_stderr=3.5,
            consistency_ms=250.75,
        ),
        Stint("r1", 1, 1, None, 1, 3, 3, 2, 0, True),
    ],
    "f1.strategy.recommendations": [
        Recommendation(
            event_id="rec-r1-16-20",
            race_id="r1",
            driver_number=16,
            lap=20,
            action="BOX_IN_WINDOW",
            pit_window_start=21,
            pit_window_end=24,
            compound="HARD",
            undercut_threat=0.625,
            overcut_chance=0.125,
            expected_position=1.5,
            model="lgbm-v3",
            explanation="Undercut threat from car 1 (gap 1.8 s)",
        ),
        Recommendation("rec-2", "r1", 1, 2, "NO_CALL"),
    ],
    "f1.race.commentary": [
        Commentary("com-1", "r1", 1_180_000, 12, "Leclerc takes the lead from Verstappen!", "ev-ot-r1-12-16-1", 3),
        Commentary("com-2", "r1", 0, 0, "Lights out!", "ev-start"),
    ],
    "f1.deadletter": [
        DeadLetter(
            source_topic="f1.timing.lap",
            reason="not Confluent-framed Avro",
            error_type="DECODE",
            step="decode-input",
            received_at=datetime(2024, 3, 2, 17, 4, 5, 678_000, tzinfo=CEST),
            key=b"r1:16",
            value=b"\x00\xff\x10garbage\x00",
            partition=3,
            offset=12_345_678_901,
            race_id="r1",
        ),
        DeadLetter(
            "POST /events", "unknown driver 99", "UNKNOWN_DRIVER", "validate", datetime(2024, 3, 2, 15, 0, tzinfo=UTC)
        ),
    ],
}

CASES = [
    pytest.param(topic, record, id=f"{topic}-{i}")
    for topic, records in SAMPLES.items()
    for i, record in enumerate(records)
]
FIRST_CASES = [pytest.param(topic, records[0], id=topic) for topic, records in SAMPLES.items()]


@pytest.fixture
def registry() -> SchemaRegistryClient:
    """A fresh in-process registry (each ``mock://`` client keeps its own schemas)."""
    return make_registry_client(f"mock://test-codec-{uuid.uuid4().hex}")


@pytest.fixture
def codec(registry: SchemaRegistryClient) -> Codec:
    return Codec(registry)


def frame(schema_id: int, body: bytes = b"") -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def test_samples_cover_every_topic() -> None:
    assert set(SAMPLES) == set(ALL_TYPES) == set(SCHEMA_FILES)
    assert set(SCHEMA_FILES) == set(INPUT_TOPICS) | set(OUTPUT_TOPICS)
    for topic, records in SAMPLES.items():
        assert all(type(r) is ALL_TYPES[topic] for r in records), topic


@pytest.mark.parametrize(("topic", "record"), CASES)
def test_roundtrip(codec: Codec, topic: str, record: Any) -> None:
    raw = codec.encode(topic, record)

    decoded_topic, data = codec.decode(raw)
    assert decoded_topic == topic
    assert data == record.to_dict()
    assert codec.decode_record(raw) == record


@pytest.mark.parametrize(("topic", "record"), CASES)
def test_roundtrip_through_a_second_codec(registry: SchemaRegistryClient, topic: str, record: Any) -> None:
    """A reader that never wrote looks the writer schema up by id in the registry."""
    raw = Codec(registry).encode(topic, record)
    assert Codec(registry).decode_record(raw) == record


def test_deadletter_keeps_bytes_and_the_instant(codec: Codec) -> None:
    record = SAMPLES["f1.deadletter"][0]
    back = codec.decode_record(codec.encode("f1.deadletter", record))
    assert back.key == b"r1:16"
    assert back.value == b"\x00\xff\x10garbage\x00"
    assert back.received_at.tzinfo is not None
    assert back.received_at == record.received_at  # the same instant ...
    assert back.received_at.utcoffset() == timedelta(0)  # ... read back in UTC
    assert back.received_at == datetime(2024, 3, 2, 15, 4, 5, 678_000, tzinfo=UTC)


def test_session_keeps_nested_records(codec: Codec) -> None:
    record = SAMPLES["f1.race.session"][0]
    back = codec.decode_record(codec.encode("f1.race.session", record))
    assert back.drivers[1] == Driver(1, "VER", "Max Verstappen", "Red Bull Racing", "888888")
    assert back.track_outline[1] == TrackPoint(120.5, -33.25)
    assert back.start_time == START


def test_leaderboard_restores_enums_and_nested_records(codec: Codec) -> None:
    record = SAMPLES["f1.race.leaderboard"][0]
    back = codec.decode_record(codec.encode("f1.race.leaderboard", record))
    assert back.track_status is TrackStatus.GREEN
    assert [r.status for r in back.rows] == [CarStatus.FINISHED, CarStatus.RUNNING]
    assert isinstance(back.fastest_lap, FastestLap)
    assert isinstance(back.hero, Hero)
    assert back.hero.final is True


# ---------------------------------------------------------------------------- wire format


def test_register_all_gives_one_id_per_topic(codec: Codec, registry: SchemaRegistryClient) -> None:
    ids = codec.register_all()
    assert set(ids) == set(SCHEMA_FILES)
    assert len(set(ids.values())) == len(ids)
    for topic, schema_id in ids.items():
        assert registry.get_latest_version(subject(topic)).schema_id == schema_id
    assert codec.register_all() == ids  # idempotent


@pytest.mark.parametrize(("topic", "record"), FIRST_CASES)
def test_wire_format(codec: Codec, registry: SchemaRegistryClient, topic: str, record: Any) -> None:
    raw = codec.encode(topic, record)
    schema_id = registry.get_latest_version(subject(topic)).schema_id
    assert schema_id is not None

    assert raw[0] == 0
    assert raw[1:5] == schema_id.to_bytes(4, "big")
    assert codec.schema_id(raw) == schema_id
    body = fastavro.schemaless_reader(io.BytesIO(raw[5:]), json.loads(schema_text(topic)))
    assert body == record.to_dict()  # the rest is the plain Avro binary body


def test_subject_is_topic_name_strategy() -> None:
    assert subject("f1.timing.lap") == "f1.timing.lap-value"


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\x00\x00\x00\x01", b"garbage bytes, not Avro", b"\x01\x00\x00\x00\x01body", b'{"event_id": "e1"}'],
    ids=["empty", "magic-only", "short-header", "text", "wrong-magic", "json"],
)
def test_garbage_is_a_decode_error(codec: Codec, data: bytes) -> None:
    with pytest.raises(CodecError) as err:
        codec.decode(data)
    assert err.value.error_type == "DECODE"


def test_unknown_schema_id(codec: Codec) -> None:
    codec.register_all()
    with pytest.raises(CodecError) as err:
        codec.decode(frame(424_242, b"\x02e1"))
    assert err.value.error_type == "UNKNOWN_SCHEMA"
    assert "424242" in str(err.value)


def test_schema_that_is_not_racewires(codec: Codec, registry: SchemaRegistryClient) -> None:
    foreign = '{"type": "record", "name": "Order", "namespace": "shop", "fields": []}'
    schema_id = registry.register_schema("orders-value", Schema(foreign, "AVRO"))
    with pytest.raises(CodecError) as err:
        codec.decode(frame(schema_id))
    assert err.value.error_type == "UNKNOWN_SCHEMA"


@pytest.mark.parametrize(("topic", "record"), FIRST_CASES)
def test_truncated_body_is_a_decode_error(codec: Codec, topic: str, record: Any) -> None:
    raw = codec.encode(topic, record)
    for cut in (len(raw) - 1, len(raw) // 2, 6, 5):
        with pytest.raises(CodecError) as err:
            codec.decode(raw[:cut])
        assert err.value.error_type == "DECODE", cut


def test_missing_required_field_is_invalid(codec: Codec) -> None:
    data = SAMPLES["f1.timing.lap"][0].to_dict()
    del data["race_id"]
    with pytest.raises(CodecError) as err:
        codec.encode_dict("f1.timing.lap", data)
    assert err.value.error_type == "INVALID"
    assert "race_id" in str(err.value)


@pytest.mark.parametrize(
    ("topic", "bad"),
    [
        ("f1.timing.lap", {"lap": "twelve"}),
        ("f1.timing.lap", {"track_status": "CHEQUERED"}),
        ("f1.race.session", {"drivers": [{"number": 1}]}),
        ("f1.deadletter", {"value": "not bytes"}),
    ],
    ids=["wrong-type", "unknown-enum-symbol", "incomplete-nested-record", "str-for-bytes"],
)
def test_wrong_values_are_invalid(codec: Codec, topic: str, bad: dict[str, Any]) -> None:
    data = {**SAMPLES[topic][0].to_dict(), **bad}
    with pytest.raises(CodecError) as err:
        codec.encode_dict(topic, data)
    assert err.value.error_type == "INVALID"


# ---------------------------------------------------------------------------- evolution


def test_decodes_records_written_with_an_older_schema(codec: Codec, registry: SchemaRegistryClient) -> None:
    """A writer on an older version (no ``deleted`` field) is resolved to the current schema."""
    old = json.loads(schema_text("f1.timing.lap"))
    old["fields"] = [f for f in old["fields"] if f["name"] != "deleted"]
    old_id = registry.register_schema("f1.timing.lap-value", Schema(json.dumps(old), "AVRO"))
    data = {**SAMPLES["f1.timing.lap"][0].to_dict()}
    del data["deleted"]
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(old), data)

    topic, decoded = codec.decode(frame(old_id, body.getvalue()))

    assert topic == "f1.timing.lap"
    assert decoded == {**data, "deleted": False}
    assert codec.decode_record(frame(old_id, body.getvalue())).deleted is False
