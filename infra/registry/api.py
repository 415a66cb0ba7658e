"""The registry's HTTP API: the routes of Confluent Schema Registry's REST API over a
:class:`~infra.registry.store.SchemaStore`, with Confluent's error bodies and content type."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from infra.registry.compat import COMPATIBILITY_LEVELS
from infra.registry.errors import RegistryError
from infra.registry.store import SCHEMA_TYPES, SchemaStore

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryResponse(JSONResponse):
    """JSON with Confluent's content type."""

    media_type = CONTENT_TYPE


def _store(request: Request) -> SchemaStore:
    return request.app.state.store  # type: ignore[no-any-return]


async def _json_body(request: Request) -> Any:
    """The JSON request body, whatever content type the client declared."""
    raw = await request.body()
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError as exc:
        raise RegistryError(400, 400, f"the request body is not valid JSON: {exc}") from exc


def _paginate(items: list[Any], offset: int, limit: int) -> list[Any]:
    start = max(offset, 0)
    return items[start:] if limit < 0 else items[start : start + limit]


def _raw_schema(text: str) -> Response:
    return Response(content=text, media_type=CONTENT_TYPE)


Store = Annotated[SchemaStore, Depends(_store)]
Body = Annotated[Any, Depends(_json_body)]
Deleted = Annotated[bool, Query(description="include soft-deleted subjects / versions")]
DeletedOnly = Annotated[bool, Query(alias="deletedOnly")]
Offset = Annotated[int, Query()]
Limit = Annotated[int, Query(description="page size; negative: no limit")]

schemas_api = APIRouter(tags=["schemas"])
subjects_api = APIRouter(tags=["subjects"])
config_api = APIRouter(tags=["config"])


@schemas_api.get("/schemas/types")
async def schema_types() -> list[str]:
    return list(SCHEMA_TYPES)


@schemas_api.get("/schemas")
async def list_schemas(
    store: Store,
    subject_prefix: Annotated[str, Query(alias="subjectPrefix")] = "",
    deleted: Deleted = False,
    latest_only: Annotated[bool, Query(alias="latestOnly")] = False,
    offset: Offset = 0,
    limit: Limit = -1,
) -> list[dict[str, Any]]:
    return _paginate(store.all_schemas(subject_prefix, deleted, latest_only), offset, limit)


@schemas_api.get("/schemas/ids/{schema_id}")
async def schema_by_id(store: Store, schema_id: int) -> dict[str, Any]:
    # ?subject= and ?format= are accepted and ignored: ids are global here (one context)
    return store.schema_by_id(schema_id)


@schemas_api.get("/schemas/ids/{schema_id}/schema")
async def raw_schema_by_id(store: Store, schema_id: int) -> Response:
    return _raw_schema(store.schema_by_id(schema_id)["schema"])


@schemas_api.get("/schemas/ids/{schema_id}/subjects")
async def subjects_of_id(
    store: Store,
    schema_id: int,
    subject: str | None = None,
    deleted: Deleted = False,
    offset: Offset = 0,
    limit: Limit = -1,
) -> list[str]:
    subjects = sorted({u["subject"] for u in store.id_usages(schema_id, deleted)})
    if subject is not None:
        subjects = [s for s in subjects if s == subject]
    return _paginate(subjects, offset, limit)


@schemas_api.get("/schemas/ids/{schema_id}/versions")
async def versions_of_id(
    store: Store,
    schema_id: int,
    subject: str | None = None,
    deleted: Deleted = False,
    offset: Offset = 0,
    limit: Limit = -1,
) -> list[dict[str, Any]]:
    usages = store.id_usages(schema_id, deleted)
    if subject is not None:
        usages = [u for u in usages if u["subject"] == subject]
    return _paginate(usages, offset, limit)


@subjects_api.get("/subjects")
async def list_subjects(
    store: Store,
    subject_prefix: Annotated[str, Query(alias="subjectPrefix")] = "",
    deleted: Deleted = False,
    deleted_only: DeletedOnly = False,
    offset: Offset = 0,
    limit: Limit = -1,
) -> list[str]:
    return _paginate(store.subjects(deleted, subject_prefix, deleted_only), offset, limit)


@subjects_api.get("/subjects/{subject}/versions")
async def list_versions(
    store: Store,
    subject: str,
    deleted: Deleted = False,
    deleted_only: DeletedOnly = False,
    offset: Offset = 0,
    limit: Limit = -1,
) -> list[int]:
    return _paginate(store.versions(subject, deleted, deleted_only), offset, limit)


@subjects_api.get("/subjects/{subject}/versions/{version}")
async def get_version(store: Store, subject: str, version: str, deleted: Deleted = False) -> dict[str, Any]:
    return store.get_version(subject, version, deleted)


@subjects_api.get("/subjects/{subject}/versions/{version}/schema")
async def get_version_schema(store: Store, subject: str, version: str, deleted: Deleted = False) -> Response:
    return _raw_schema(store.get_version(subject, version, deleted)["schema"])


@subjects_api.get("/subjects/{subject}/versions/{version}/referencedby")
async def referenced_by(store: Store, subject: str, version: str) -> list[int]:
    store.get_version(subject, version)  # 404s as Confluent does; references are not supported
    return []


@subjects_api.post("/subjects/{subject}/versions")
async def register(store: Store, subject: str, body: Body) -> dict[str, Any]:
    # ?normalize= is accepted: schemas are always compared by their normal form here
    return {"id": store.register(subject, body)}


@subjects_api.post("/subjects/{subject}")
async def lookup(store: Store, subject: str, body: Body, deleted: Deleted = False) -> dict[str, Any]:
    return store.lookup(subject, body, deleted)


@subjects_api.delete("/subjects/{subject}")
async def delete_subject(store: Store, subject: str, permanent: bool = False) -> list[int]:
    return store.delete_subject(subject, permanent)


@subjects_api.delete("/subjects/{subject}/versions/{version}")
async def delete_version(store: Store, subject: str, version: str, permanent: bool = False) -> int:
    return store.delete_version(subject, version, permanent)


@subjects_api.post("/compatibility/subjects/{subject}/versions/{version}")
async def check_against_version(
    store: Store, subject: str, version: str, body: Body, verbose: bool = False
) -> dict[str, Any]:
    return store.test_compatibility(subject, body, version, verbose)


@subjects_api.post("/compatibility/subjects/{subject}/versions")
async def check_against_all(store: Store, subject: str, body: Body, verbose: bool = False) -> dict[str, Any]:
    return store.test_compatibility(subject, body, None, verbose)


def _level_from_body(body: Any) -> str:
    if isinstance(body, dict):
        level = body.get("compatibility") or body.get("compatibilityLevel")
        if isinstance(level, str):
            return level
    raise RegistryError(
        422,
        42203,
        'Invalid compatibility level: send {"compatibility": "BACKWARD"} (or another '
        "level: " + ", ".join(COMPATIBILITY_LEVELS) + ")",
    )


@config_api.get("/config")
async def get_global_config(store: Store) -> dict[str, Any]:
    return {"compatibilityLevel": store.get_config()}


@config_api.put("/config")
async def put_global_config(store: Store, body: Body) -> dict[str, Any]:
    return {"compatibility": store.set_config(None, _level_from_body(body))}


@config_api.delete("/config")
async def delete_global_config(store: Store) -> dict[str, Any]:
    return {"compatibilityLevel": store.delete_config()}


@config_api.get("/config/{subject}")
async def get_subject_config(
    store: Store,
    subject: str,
    default_to_global: Annotated[bool, Query(alias="defaultToGlobal")] = False,
) -> dict[str, Any]:
    return {"compatibilityLevel": store.get_config(subject, default_to_global)}


@config_api.put("/config/{subject}")
async def put_subject_config(store: Store, subject: str, body: Body) -> dict[str, Any]:
    return {"compatibility": store.set_config(subject, _level_from_body(body))}


@config_api.delete("/config/{subject}")
async def delete_subject_config(store: Store, subject: str) -> dict[str, Any]:
    return {"compatibilityLevel": store.delete_config(subject)}


def _mode_from_body(body: Any) -> dict[str, str]:
    mode = body.get("mode") if isinstance(body, dict) else None
    if str(mode).upper() != "READWRITE":
        raise RegistryError(422, 42204, f"Invalid mode '{mode}': racewire's registry only runs in READWRITE mode")
    return {"mode": "READWRITE"}


@config_api.get("/mode")
@config_api.get("/mode/{subject}")
async def get_mode(subject: str | None = None) -> dict[str, str]:
    return {"mode": "READWRITE"}


@config_api.put("/mode")
@config_api.put("/mode/{subject}")
async def put_mode(body: Body, subject: str | None = None) -> dict[str, str]:
    return _mode_from_body(body)


@config_api.get("/contexts")
async def contexts() -> list[str]:
    return ["."]


@config_api.get("/")
async def root() -> dict[str, Any]:
    return {}


def _error(status: int, error_code: int, message: str) -> RegistryResponse:
    return RegistryResponse({"error_code": error_code, "message": message}, status_code=status)


async def _registry_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    return _error(exc.status, exc.error_code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return _error(exc.status_code, exc.status_code, f"HTTP {exc.status_code}: {exc.detail}")


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
    return _error(422, 422, f"Invalid request: {details}")


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("registry request %s %s failed", request.method, request.url.path)
    return _error(500, 50000, f"Internal error: {exc!r}")


def create_app(data_dir: Path) -> FastAPI:
    """The registry's ASGI app, keeping its state under ``data_dir/registry``."""
    app = FastAPI(
        title="racewire schema registry",
        summary="Confluent Schema Registry compatible REST API (Avro)",
        version="1",
        default_response_class=RegistryResponse,
    )
    app.state.store = SchemaStore(Path(data_dir) / "registry")
    for router in (schemas_api, subjects_api, config_api):
        app.include_router(router)
    app.add_exception_handler(RegistryError, _registry_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    return app
