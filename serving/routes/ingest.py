"""``POST /api/events``: authenticated ingest of input records, validated against the Avro schemas."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request, status

from dataflows.connectors.spool import SpoolFull
from serving.deps import Authenticated, MetricsDep, get_ingest
from serving.ingest import FieldError, KafkaIngest, to_datum
from serving.models import IngestItem, IngestResult

router = APIRouter(tags=["ingest"], dependencies=[Authenticated])

MAX_BATCH = 10_000
_ITEM = IngestItem.model_json_schema()

EXAMPLE = {"topic": "f1.race.control",
           "record": {"event_id": "sim-1:rc:1", "race_id": "sim-1", "ts_ms": 10000, "kind": "RACE_START",
                      "message": "lights out"}}


@router.post("/events", status_code=status.HTTP_202_ACCEPTED, response_model=IngestResult,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"anyOf": [_ITEM, {"type": "array", "items": _ITEM}]}, "example": EXAMPLE}}}},
             summary="Produce input records to Kafka",
             description="Body: one `{topic, record}` object or a list of them. Each record is checked against "
                         "its topic's Avro schema; a 422 names every offending field (`loc`). Records are produced "
                         "Confluent-framed (schema registry) and keyed as the simulator keys them. 503 when this "
                         "server has no Kafka or schema registry configured.",
             responses={401: {"description": "no or wrong X-API-Key"}, 422: {"description": "invalid record"},
                        503: {"description": "Kafka or the schema registry is not configured or unreachable"}})
async def ingest(request: Request, metrics: MetricsDep,
                 body: Annotated[Any, Body(examples=[EXAMPLE])]) -> dict[str, Any]:
    items, errors = _items(body)
    data: list[tuple[str, dict[str, Any]]] = []
    for loc, topic, record in items:
        datum, problems = to_datum(topic, record, (*loc, "record"))
        errors.extend(problems)
        if datum is not None:
            data.append((topic, datum))
    if errors:
        metrics.ingest_rejected.inc(max(1, len(items) - len(data)))
        raise HTTPException(422, detail=[e.to_dict() for e in errors[:100]])
    producer: KafkaIngest = get_ingest(request)
    try:
        results = await producer.produce(data)
    except SpoolFull as exc:  # the broker is away and the ingest's disk spool is full
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc),
                            headers={"Retry-After": str(exc.retry_after_s)}) from None
    except (TimeoutError, ConnectionError, BufferError) as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail=f"could not produce to Kafka: {exc or type(exc).__name__}; retry later") from None
    except Exception as exc:  # registry errors come in several types
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail=f"could not encode or produce the records: {exc}") from None
    for topic, _ in data:
        metrics.ingested.labels(topic).inc()
    return {"accepted": len(results), "results": results}


def _items(body: Any) -> tuple[list[tuple[tuple[str | int, ...], str, Any]], list[FieldError]]:
    """``(loc, topic, record)`` per item of a single object or a list, and the shape errors found."""
    single = isinstance(body, dict)
    raw = [body] if single else body
    if not isinstance(raw, list) or not raw:
        return [], [FieldError(("body",), "expected an object {topic, record} or a non-empty list of them")]
    if len(raw) > MAX_BATCH:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            detail=f"at most {MAX_BATCH} records per request; got {len(raw)}")
    items: list[tuple[tuple[str | int, ...], str, Any]] = []
    errors: list[FieldError] = []
    for i, item in enumerate(raw):
        loc: tuple[str | int, ...] = ("body",) if single else ("body", i)
        if not isinstance(item, dict):
            errors.append(FieldError(loc, "expected an object {topic, record}"))
            continue
        for extra in set(item) - {"topic", "record"}:
            errors.append(FieldError((*loc, extra), "unknown field; an item has only topic and record"))
        topic, record = item.get("topic"), item.get("record")
        if not isinstance(topic, str):
            errors.append(FieldError((*loc, "topic"), "field required (string)" if topic is None
                                     else "expected a string"))
        if "record" not in item:
            errors.append(FieldError((*loc, "record"), "field required (object)"))
        if isinstance(topic, str) and "record" in item:
            items.append((loc, topic, record))
    return items, errors
