"""racewire's own schema registry: the part of Confluent Schema Registry's REST API clients use.

Local stacks and tests need a registry, and none installs here without a JVM; this one speaks the
REST API of Confluent Schema Registry that the Confluent clients call (Python
``SchemaRegistryClient`` / ``AvroSerializer`` / ``AvroDeserializer``, the Java serdes, ``curl``),
so racewire's :class:`~schemas.codec.Codec` and any standard Kafka + Avro consumer share one
source of schema ids. Only Avro schemas, without references, are supported.

Run it in the foreground (``SIGINT`` / ``SIGTERM`` stop it cleanly)::

    racewire registry --port 18081 --data-dir .racewire
    curl -s http://127.0.0.1:18081/subjects

or embed it (tests, the local stack)::

    with RegistryServer(tmp_path) as registry:
        codec = Codec(make_registry_client(registry.url))

Semantics follow Confluent's:

- ids are global (the same schema has the same id under every subject) and never reused;
  versions count per subject; registering a schema the subject already has returns its id;
- a new version must pass the subject's compatibility level (default ``BACKWARD``: the new schema
  reads data written with the latest one), else HTTP 409 with error code 409;
- schemas are compared by a normal form (full names, sorted attributes, no whitespace), so
  reformatting a schema is not a new version, while changing a doc or a default is;
- deletes are soft; ``?permanent=true`` after a soft delete removes a subject or version;
- errors are ``{"error_code": 40401, "message": "..."}`` with Confluent's codes and statuses.

State is one JSON file, ``<data_dir>/registry/registry.json``, replaced atomically
(temporary file, ``fsync``, ``os.replace``) on every change, so ids and versions survive
restarts; a lock file keeps two registries from sharing a data directory.

The modules, by job:

- :mod:`~infra.registry.compat`: Avro schemas (validation, normal form) and the compatibility
  check between two schemas; pure;
- :mod:`~infra.registry.store`: subjects, versions and ids, persisted in the JSON file;
- :mod:`~infra.registry.api`: the HTTP API (routes, Confluent's error bodies);
- :mod:`~infra.registry.server`: uvicorn in a background thread, and ``racewire registry``;
- :mod:`~infra.registry.errors`: the errors they raise.
"""

from infra.registry.api import CONTENT_TYPE, create_app
from infra.registry.compat import AvroSchema, canonical_form, compatibility_problems, parse_avro
from infra.registry.errors import InvalidSchemaError, PortInUseError, RegistryDataError, RegistryError
from infra.registry.server import RegistryServer
from infra.registry.store import SchemaStore

__all__ = [
    "CONTENT_TYPE",
    "AvroSchema",
    "InvalidSchemaError",
    "PortInUseError",
    "RegistryDataError",
    "RegistryError",
    "RegistryServer",
    "SchemaStore",
    "canonical_form",
    "compatibility_problems",
    "create_app",
    "parse_avro",
]
