"""Schemas evolve BACKWARD-compatibly, and every released version is kept.

``schemas/avro/history/<name>/v<N>.avsc`` holds every released version of ``schemas/avro/<name>.avsc``.
For every schema:

(a) the newest history version equals the current schema, so a change cannot land without a
    new history version;
(b) each version is BACKWARD compatible with the one before it, checked with the function
    racewire's registry applies on registration (:func:`infra.registry.compat.compatibility_problems`);
(c) records written with every older version decode with the current schema (fastavro schema
    resolution, and the codec through a registry).

To change a schema, see ``schemas/avro/history/README.md``.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema

from infra.registry import (
    RegistryError,
    SchemaStore,
    canonical_form,
    compatibility_problems,
    parse_avro,
)
from schemas.codec import SCHEMA_FILES, Codec, make_registry_client, schema_text, subject

HISTORY = Path(__file__).resolve().parents[3] / "schemas" / "avro" / "history"
NAMES = {topic: Path(file).stem for topic, file in SCHEMA_FILES.items()}
TOPICS = list(SCHEMA_FILES)
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")


def history(topic: str) -> list[tuple[int, str]]:
    """``[(N, text of vN.avsc), ...]`` oldest first."""
    folder = HISTORY / NAMES[topic]
    versions = []
    for path in folder.iterdir():
        match = _VERSION_FILE.match(path.name)
        assert match, f"{path}: history files are named v<N>.avsc"
        versions.append((int(match.group(1)), path.read_text(encoding="utf-8")))
    return sorted(versions)


def evolution_problems(versions: list[str], level: str = "BACKWARD") -> list[str]:
    """Every problem of each version following the one before it, as the registry sees it."""
    return [
        f"v{n + 1} after v{n}: {p}"
        for n, (old, new) in enumerate(itertools.pairwise(versions), start=1)
        for p in compatibility_problems(new, old, level)
    ]


# ----------------------------------------------------------------------- sample records


def sample(schema: Any, full: bool) -> Any:
    """A valid datum for an (expanded, parsed) schema: ``full`` fills every optional part
    (non-null union branches, two array items), else the smallest datum (nulls, empty arrays)."""
    if isinstance(schema, list):
        non_null = [s for s in schema if s != "null"]
        branch = non_null[0] if full and non_null else ("null" if "null" in schema else schema[0])
        return sample(branch, full)
    if isinstance(schema, str):
        schema = {"type": schema}
    kind = schema["type"]
    if isinstance(kind, dict | list):
        return sample(kind, full)
    logical = schema.get("logicalType")
    if logical in ("timestamp-millis", "timestamp-micros"):
        return datetime(2024, 3, 2, 15, 4, 5, 678_000, tzinfo=UTC) if full else datetime(1970, 1, 1, tzinfo=UTC)
    simple = {
        "null": None,
        "boolean": full,
        "int": 7 if full else 0,
        "long": 1_234_567_890_123 if full else 0,
        "float": 1.5 if full else 0.0,
        "double": -2.25 if full else 0.0,
        "bytes": b"\x00\xffraw" if full else b"",
        "string": "text" if full else "",
    }
    if kind in simple:
        return simple[kind]
    if kind == "enum":
        return schema["symbols"][-1 if full else 0]
    if kind == "fixed":
        return bytes(range(schema["size"]))
    if kind == "array":
        return [sample(schema["items"], full)] * 2 if full else []
    if kind == "map":
        return {"k": sample(schema["values"], full)} if full else {}
    if kind in ("record", "error"):
        return {f["name"]: sample(f["type"], full) for f in schema["fields"]}
    raise AssertionError(f"no sample for schema type {kind!r}")


def expanded(text: str) -> Any:
    return fastavro.parse_schema(json.loads(text), expand=True)


def old_version_cases() -> list[Any]:
    return [
        pytest.param(topic, n, text, full, id=f"{NAMES[topic]}-v{n}-{'full' if full else 'min'}")
        for topic in TOPICS
        for n, text in history(topic)
        for full in (True, False)
    ]


# ----------------------------------------------------------------------------- layout


def test_every_schema_has_a_history_and_nothing_else_does() -> None:
    folders = {p.name for p in HISTORY.iterdir() if p.is_dir()}
    assert folders == set(NAMES.values())


@pytest.mark.parametrize("topic", TOPICS)
def test_versions_are_numbered_from_1_without_gaps(topic: str) -> None:
    numbers = [n for n, _ in history(topic)]
    assert numbers == list(range(1, len(numbers) + 1))


@pytest.mark.parametrize("topic", TOPICS)
def test_every_version_is_a_valid_schema_of_the_same_type(topic: str) -> None:
    names = {json.loads(text)["namespace"] + "." + json.loads(text)["name"] for _, text in history(topic)}
    for _, text in history(topic):
        parse_avro(text)  # raises for invalid Avro (names, types, defaults)
    current = json.loads(schema_text(topic))
    # renaming needs an alias for the old name: the codec maps schemas to topics by name
    assert names <= {current["namespace"] + "." + current["name"], *current.get("aliases", [])}


# ----------------------------------------------------------------------------- (a), (b)


@pytest.mark.parametrize("topic", TOPICS)
def test_newest_history_version_is_the_current_schema(topic: str) -> None:
    n, newest = history(topic)[-1]
    assert json.loads(newest) == json.loads(schema_text(topic)), (
        f"schemas/avro/{SCHEMA_FILES[topic]} differs from history/{NAMES[topic]}/v{n}.avsc: a "
        f"released schema is never edited; add history/{NAMES[topic]}/v{n + 1}.avsc equal to it"
    )


@pytest.mark.parametrize("topic", TOPICS)
def test_each_version_is_backward_compatible_with_the_previous(topic: str) -> None:
    versions = [text for _, text in history(topic)]
    assert evolution_problems(versions) == []


@pytest.mark.parametrize("topic", TOPICS)
def test_current_schema_reads_every_older_version(topic: str) -> None:
    """BACKWARD_TRANSITIVE in effect: consumers may hold data written with any version."""
    current = schema_text(topic)
    for n, text in history(topic):
        assert compatibility_problems(current, text, "BACKWARD") == [], f"v{n}"


# ----------------------------------------------------------------------------- (c)


@pytest.mark.parametrize(("topic", "n", "text", "full"), old_version_cases())
def test_data_written_with_each_version_decodes_with_the_current_schema(
    topic: str, n: int, text: str, full: bool
) -> None:
    writer, reader = expanded(text), expanded(schema_text(topic))
    datum = sample(writer, full)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer, datum)

    record = fastavro.schemaless_reader(io.BytesIO(buf.getvalue()), writer, reader)
    assert isinstance(record, dict)

    fastavro.validation.validate(record, reader, raise_errors=True)
    written = {f["name"]: f for f in writer["fields"]}
    for field in reader["fields"]:
        name = field["name"]
        if name not in written:
            assert record[name] == field["default"], f"new field {name} gets its default"
        elif canonical_form(written[name]["type"]) == canonical_form(field["type"]):
            assert record[name] == datum[name], f"unchanged field {name} keeps its value"


@pytest.mark.parametrize("topic", TOPICS)
def test_codec_decodes_every_version_through_a_registry(topic: str) -> None:
    registry = make_registry_client(f"mock://test-compat-{uuid.uuid4().hex}")
    codec = Codec(registry)
    for n, text in history(topic):
        schema_id = registry.register_schema(subject(topic), Schema(text, "AVRO"))
        writer = expanded(text)
        buf = io.BytesIO()
        buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
        fastavro.schemaless_writer(buf, writer, sample(writer, True))

        decoded_topic, record = codec.decode(buf.getvalue())

        assert decoded_topic == topic, f"v{n}"
        fastavro.validation.validate(record, expanded(schema_text(topic)), raise_errors=True)
        codec.decode_record(buf.getvalue())  # and it makes a domain object


# ----------------------------------------------------------------------------- the check itself


def _lap(change: Any) -> str:
    schema = json.loads(schema_text("f1.timing.lap"))
    change(schema)
    return json.dumps(schema)


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)  # type: ignore[no-any-return]


LAP = schema_text("f1.timing.lap")


def test_adding_a_field_without_default_is_detected() -> None:
    v2 = _lap(lambda s: s["fields"].append({"name": "gap_ms", "type": "long"}))

    problems = evolution_problems([LAP, v2])

    assert len(problems) == 1
    assert "v2 after v1" in problems[0]
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in problems[0]
    assert "gap_ms" in problems[0]
    # and it is real: the new schema cannot read a record written with the old one
    old = expanded(LAP)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, old, sample(old, True))
    with pytest.raises(fastavro.read.SchemaResolutionError):
        fastavro.schemaless_reader(io.BytesIO(buf.getvalue()), old, expanded(v2))


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        (lambda s: _field(s, "lap").update(type="string"), "TYPE_MISMATCH"),
        (lambda s: _field(s, "crossing_ms").update(type="int"), "TYPE_MISMATCH"),
        (lambda s: _field(s, "tyre_age").update(type="int", default=0), "TYPE_MISMATCH"),
        (lambda s: s.update(name="LapCompleted"), "NAME_MISMATCH"),
        (
            lambda s: _field(s, "track_status")["type"].update(
                symbols=["GREEN", "YELLOW", "SC", "RED", "VSC"], default=None
            ),
            "MISSING_ENUM_SYMBOLS",
        ),
    ],
    ids=["int-to-string", "long-to-int", "optional-to-required", "rename", "drop-enum-symbol"],
)
def test_other_incompatible_changes_are_detected(change: Any, kind: str) -> None:
    def apply(schema: dict[str, Any]) -> None:
        change(schema)
        ts = _field(schema, "track_status")["type"]
        if ts.get("default") is None:
            ts.pop("default", None)

    problems = compatibility_problems(_lap(apply), LAP, "BACKWARD")
    assert problems and kind in problems[0]


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s["fields"].append({"name": "gap_ms", "type": ["null", "long"], "default": None}),
        lambda s: s["fields"].append({"name": "stint", "type": "int", "default": 1}),
        lambda s: s["fields"].remove(_field(s, "sector3_ms")),
        lambda s: _field(s, "tyre_age").update(type=["null", "long"]),
        lambda s: _field(s, "track_status")["type"]["symbols"].append("CHEQUERED"),
        lambda s: s.update(name="LapCompleted", aliases=["io.racewire.input.Lap"]),
        lambda s: _field(s, "lap").update(doc="Reworded."),
    ],
    ids=[
        "optional-field",
        "field-with-default",
        "drop-field",
        "int-to-long",
        "new-enum-symbol",
        "rename-with-alias",
        "doc-change",
    ],
)
def test_compatible_changes_pass(change: Any) -> None:
    assert compatibility_problems(_lap(change), LAP, "BACKWARD") == []


def test_levels() -> None:
    dropped = _lap(lambda s: s["fields"].remove(_field(s, "crossing_ms")))  # required field
    added = _lap(lambda s: s["fields"].append({"name": "x", "type": "int", "default": 0}))
    assert compatibility_problems(dropped, LAP, "BACKWARD") == []
    assert compatibility_problems(dropped, LAP, "FORWARD") != []  # old readers need it
    assert compatibility_problems(dropped, LAP, "FULL") != []
    assert compatibility_problems(added, LAP, "FULL_TRANSITIVE") == []
    assert compatibility_problems(_lap(lambda s: s.update(name="X")), LAP, "NONE") == []
    with pytest.raises(RegistryError) as err:
        compatibility_problems(added, LAP, "SIDEWAYS")
    assert err.value.error_code == 42203


def test_the_registry_refuses_what_the_history_test_refuses(tmp_path: Path) -> None:
    """The same check guards registration: 409, nothing written."""
    store = SchemaStore(tmp_path)
    first = store.register("f1.timing.lap-value", {"schema": LAP})
    bad = _lap(lambda s: s["fields"].append({"name": "gap_ms", "type": "long"}))

    with pytest.raises(RegistryError) as err:
        store.register("f1.timing.lap-value", {"schema": bad})

    assert (err.value.status, err.value.error_code) == (409, 409)
    assert "gap_ms" in err.value.message
    assert SchemaStore(tmp_path).versions("f1.timing.lap-value") == [1]
    good = _lap(lambda s: s["fields"].append({"name": "gap_ms", "type": "long", "default": 0}))
    assert store.register("f1.timing.lap-value", {"schema": good}) == first + 1


def test_reformatting_is_not_a_new_schema() -> None:
    text = schema_text("f1.race.control")
    reformatted = json.dumps(json.loads(text), indent=None, sort_keys=True)
    # the same schema with namespaces spelled out on every named type
    spelled = copy.deepcopy(json.loads(text))
    spelled["name"] = "io.racewire.input.Control"
    del spelled["namespace"]
    assert parse_avro(reformatted).canonical == parse_avro(text).canonical
    assert parse_avro(json.dumps(spelled)).canonical == parse_avro(text).canonical
    assert parse_avro(_lap(lambda s: s.update(doc="x"))).canonical != parse_avro(LAP).canonical
