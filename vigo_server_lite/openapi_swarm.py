"""The ``/api/v1/swarm`` part of the OpenAPI document (filecast and its seeders; see
docs/filecast.md).

Data next to ``api.ROUTES`` like the rest of ``openapi``; ``openapi_document`` merges
``SWARM_PATHS`` and ``SWARM_SCHEMAS`` in.
"""

from __future__ import annotations

from typing import Any

from vigo_swarm.manifest import MAX_TARGETS

from .filecast import MAX_CHUNKS, MAX_ERROR_CHARS, MAX_PROGRESS_ITEMS, PROGRESS_STATES
from .filecast_seeded import BLOB_FIELDS, MAX_SIDECAR_PATH_CHARS, SEEDED_FIELDS
from .filecast_status import STATES
from .openapi import _ADMIN, _OBJ, _body, _errors, _json, _ref

_ENVOY: list[dict[str, list[str]]] = [{"envoyCertificate": []}]
_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_NUM = {"type": "number"}
_OCTETS = "application/octet-stream"


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _obj(**properties: Any) -> dict[str, Any]:
    return {"type": _OBJ, "properties": properties}


def _strict(required: list[str], **properties: Any) -> dict[str, Any]:
    """A request body object: these fields, no others."""
    return {
        "type": _OBJ,
        "required": required,
        "additionalProperties": False,
        "properties": properties,
    }


def _path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, description: str, *, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": _STR,
    }


_COUNTS = {"type": _OBJ, "properties": {s: _INT for s in STATES}}

SWARM_SCHEMAS: dict[str, Any] = {
    "ManifestRecord": {
        "type": _OBJ,
        "description": "a signed manifest record, wire form (docs/manifest.md)",
        "properties": {
            "key": _STR,
            "blob": _STR,
            "size_bytes": _INT,
            "chunk_bytes": _INT,
            "chunks_digest": _STR,
            "targets": _array(_STR),
            "retention": {"type": _OBJ},
            "tombstone": {"type": "boolean"},
            "hlc": _INT,
            "origin": _STR,
            "signature": {"type": "string", "description": "Ed25519, base64"},
        },
    },
    "FilecastRecord": _obj(
        key=_STR,
        target=_STR,
        targets=_array(_STR),
        blob=_HEX64,
        size_bytes=_INT,
        chunk_bytes=_INT,
        chunks=_INT,
        retention={"type": _OBJ},
        retention_text={"type": "string", "description": "pinned, until_revoked, expires_at:T"},
        live={"type": "boolean", "description": "neither revoked nor expired"},
        hlc=_INT,
        hlc_time=_STR,
        origin=_STR,
        source=_ref("FilecastSource"),
    ),
    "FilecastSource": {
        "type": _OBJ,
        "description": "where the record came from: an upload (distribute) or a seeder's "
        "sidecar (envoy uuid and hostname, the sidecar's path on it); unknown if the note "
        "is for another stamp",
        "properties": {
            "kind": {"enum": ["upload", "sidecar", "unknown"]},
            "envoy": _STR,
            "hostname": {"type": ["string", "null"]},
            "sidecar": _STR,
        },
    },
    "FilecastSeeded": _strict(
        sorted(SEEDED_FIELDS),
        sidecar={"type": "string", "maxLength": MAX_SIDECAR_PATH_CHARS},
        targets={"type": "array", "minItems": 1, "maxItems": MAX_TARGETS, "items": _STR},
        retention={"type": "string", "description": "until_revoked, pinned, expires_at:T"},
        blob=_strict(
            sorted(BLOB_FIELDS),
            sha256=_HEX64,
            size_bytes=_INT,
            chunk_bytes=_INT,
            chunks_digest=_HEX64,
        ),
    ),
    "FilecastSeededAnswer": _obj(
        targets=_array(
            _obj(
                target=_STR,
                key=_STR,
                outcome={"enum": ["published", "unchanged"]},
                current={"enum": ["live", "replaced", "revoked", "expired"]},
                replaced={"oneOf": [_ref("FilecastRecord"), {"type": "null"}]},
            )
        ),
        records=_array(_ref("ManifestRecord")),
        manifest_version=_INT,
    ),
    "Seeder": _obj(
        uuid=_STR,
        hostname={"type": ["string", "null"]},
        state=_STR,
        added_at={"type": ["number", "null"]},
    ),
    "FilecastDistributed": _obj(
        record=_ref("ManifestRecord"),
        blob=_obj(sha256=_HEX64, size_bytes=_INT, chunk_bytes=_INT, chunks=_INT),
        replaced={"oneOf": [_ref("FilecastRecord"), {"type": "null"}]},
        manifest_version=_INT,
    ),
    "FilecastList": _obj(
        records=_array(_ref("FilecastRecord")),
        revocations=_array(
            _obj(
                key=_STR, target={"type": ["string", "null"]}, hlc=_INT, hlc_time=_STR, origin=_STR
            )
        ),
        revocations_total=_INT,
        manifest_version=_INT,
        max_upload_bytes=_INT,
        server_time=_NUM,
    ),
    "FilecastRevoked": _obj(
        record=_ref("ManifestRecord"), revoked=_ref("FilecastRecord"), manifest_version=_INT
    ),
    "FilecastStatus": _obj(
        records=_array(
            _obj(
                key=_STR,
                target=_STR,
                blob=_HEX64,
                size_bytes=_INT,
                total_chunks=_INT,
                hlc=_INT,
                source=_ref("FilecastSource"),
                envoys=_array(
                    _obj(
                        uuid=_STR,
                        hostname=_STR,
                        state={"enum": list(STATES)},
                        have_chunks=_INT,
                        total_chunks=_INT,
                        error={"type": ["string", "null"]},
                        reported_at={"type": ["number", "null"]},
                        last_checkin={"type": ["number", "null"]},
                        manifest_in_sync={"type": ["boolean", "null"]},
                    )
                ),
                counts=_COUNTS,
                done={"type": "boolean"},
            )
        ),
        totals=_obj(
            records=_INT, envoys=_INT, pairs=_INT, counts=_COUNTS, done={"type": "boolean"}
        ),
        manifest_version=_INT,
        server_time=_NUM,
    ),
    "FilecastProgress": {
        "type": _OBJ,
        "required": ["blob", "have_chunks", "total_chunks", "state"],
        "additionalProperties": False,
        "properties": {
            "blob": _HEX64,
            "have_chunks": {"type": "integer", "minimum": 0, "maximum": MAX_CHUNKS},
            "total_chunks": {"type": "integer", "minimum": 0, "maximum": MAX_CHUNKS},
            "state": {"enum": list(PROGRESS_STATES)},
            "error": {"type": "string", "maxLength": MAX_ERROR_CHARS},
        },
    },
    "ManifestSync": {
        "type": _OBJ,
        "required": ["summary"],
        "additionalProperties": False,
        "properties": {
            "summary": {
                "type": _OBJ,
                "description": "{key: [hlc, origin]} for every record the envoy holds",
            }
        },
    },
}

PROGRESS_ITEMS: dict[str, Any] = {
    "type": "array",
    "maxItems": MAX_PROGRESS_ITEMS,
    "items": _ref("FilecastProgress"),
    "description": "optional; replaces this envoy's whole previous report",
}

SWARM_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/swarm/filecast": {
        "post": {
            "operationId": "filecastDistribute",
            "summary": "Seed a file and sign its record: every envoy materializes it at target",
            "security": _ADMIN,
            "parameters": [
                _query("target", "relative POSIX path under the envoys' files/", required=True),
                _query("retention", "until_revoked (default), pinned, expires_at:<unix s>"),
                _query("chunk_bytes", "power of two, 65536..16777216 (default 1048576)"),
            ],
            "requestBody": {
                "required": True,
                "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}},
            },
            "responses": {
                "201": _json(_ref("FilecastDistributed"), "seeded and signed"),
                **_errors(400, 401, 409, 413, 415, 503, 507),
            },
        },
        "get": {
            "operationId": "filecastList",
            "summary": "Filecast records and recent revocations",
            "security": _ADMIN,
            "responses": {"200": _json(_ref("FilecastList"), "records"), **_errors(401)},
        },
    },
    "/api/v1/swarm/filecast/revoke": {
        "post": {
            "operationId": "filecastRevoke",
            "summary": "Revoke a target: a signed tombstone replaces its record everywhere",
            "security": _ADMIN,
            "requestBody": _body(_strict(["target"], target=_STR)),
            "responses": {
                "200": _json(_ref("FilecastRevoked"), "revoked"),
                **_errors(400, 401, 404, 413, 503),
            },
        },
    },
    "/api/v1/swarm/filecast/status": {
        "get": {
            "operationId": "filecastStatus",
            "summary": "Per live record, per active envoy: progress reported at check-in",
            "security": _ADMIN,
            "responses": {"200": _json(_ref("FilecastStatus"), "status"), **_errors(401)},
        },
    },
    "/api/v1/swarm/filecast/seeded": {
        "post": {
            "operationId": "filecastSeeded",
            "summary": "A seeder publishes a NAME + NAME.swarm pair: the server checks it and "
            "signs one record per target (nothing new if this seeder asked the same before)",
            "security": _ENVOY,
            "requestBody": _body(_ref("FilecastSeeded")),
            "responses": {
                "201": _json(_ref("FilecastSeededAnswer"), "at least one record signed"),
                "200": _json(_ref("FilecastSeededAnswer"), "unchanged: nothing signed"),
                **_errors(400, 403, 413, 503),
            },
        },
    },
    "/api/v1/swarm/seeders": {
        "get": {
            "operationId": "seedersList",
            "summary": "The envoys allowed to publish sidecars",
            "security": _ADMIN,
            "responses": {
                "200": _json(_obj(seeders=_array(_ref("Seeder"))), "seeders"),
                **_errors(401),
            },
        },
        "post": {
            "operationId": "seedersAdd",
            "summary": "Allow an active envoy (UUID or hostname) to publish sidecars",
            "security": _ADMIN,
            "requestBody": _body(_strict(["envoy"], envoy=_STR)),
            "responses": {
                "201": _json(_ref("Seeder"), "added"),
                "200": _json(_ref("Seeder"), "already a seeder"),
                **_errors(400, 401, 404, 409, 413),
            },
        },
    },
    "/api/v1/swarm/seeders/{envoy}": {
        "delete": {
            "operationId": "seedersRemove",
            "summary": "Stop an envoy publishing sidecars (its records stay)",
            "security": _ADMIN,
            "parameters": [_path_param("envoy", _STR)],
            "responses": {"200": _json(_ref("Seeder"), "removed"), **_errors(401, 404)},
        },
    },
    "/api/v1/swarm/manifest/sync": {
        "post": {
            "operationId": "manifestSync",
            "summary": "The records the envoy lacks; the server never takes records",
            "security": _ENVOY,
            "requestBody": _body(_ref("ManifestSync")),
            "responses": {
                "200": _json(
                    _obj(records=_array(_ref("ManifestRecord")), want=_array(_STR)),
                    "records the envoy lacks; want is always []",
                ),
                **_errors(400, 403, 413),
            },
        },
    },
    "/api/v1/swarm/manifest/watch": {
        "get": {
            "operationId": "manifestWatch",
            "summary": "Long-poll: the manifest version, once it differs from the one given",
            "security": _ENVOY,
            "parameters": [
                _query("version", "the version the envoy last saw"),
                _query("wait", "seconds the server may hold the answer (0..50)"),
            ],
            "responses": {
                "200": _json(_obj(version=_INT), "the current manifest version"),
                **_errors(400, 403, 503),
            },
        },
    },
    "/api/v1/swarm/seed/{sha256}/info": {
        "get": {
            "operationId": "seedInfo",
            "summary": "A distributed blob's info: size, chunk size, chunk hashes",
            "security": _ENVOY,
            "parameters": [_path_param("sha256", _HEX64)],
            "responses": {
                "200": _json(
                    _obj(
                        sha256=_HEX64,
                        size_bytes=_INT,
                        chunk_bytes=_INT,
                        chunk_hashes=_array(_HEX64),
                    ),
                    "BlobInfo JSON",
                ),
                **_errors(400, 403, 404),
            },
        },
    },
    "/api/v1/swarm/seed/{sha256}/chunks/{index}": {
        "get": {
            "operationId": "seedChunk",
            "summary": "One chunk of a distributed blob, verified before it is sent",
            "security": _ENVOY,
            "parameters": [
                _path_param("sha256", _HEX64),
                _path_param("index", {"type": "integer", "minimum": 0}),
            ],
            "responses": {
                "200": {"description": "the chunk's bytes", "content": {_OCTETS: {}}},
                **_errors(400, 403, 404, 500),
            },
        },
    },
    "/api/v1/swarm/gitback": {
        "get": {
            "operationId": "gitbackShow",
            "summary": "Gitback: host patterns, which active envoys they allow, people opted in",
            "security": _ADMIN,
            "responses": {
                "200": _json(
                    _obj(
                        enabled=_array(_STR),
                        envoys=_array(_obj(uuid=_STR, hostname=_STR, allowed={"type": "boolean"})),
                        users=_array(_STR),
                    ),
                    "the gitback policy",
                ),
                **_errors(401),
            },
        },
    },
    "/api/v1/swarm/gitback/users": {
        "get": {
            "operationId": "gitbackUsersList",
            "summary": "Every person with a gitback flag",
            "security": _ADMIN,
            "responses": {
                "200": _json(
                    _obj(
                        users=_array(_obj(name=_STR, gitback={"type": "boolean"}, updated_at=_NUM))
                    ),
                    "people",
                ),
                **_errors(401),
            },
        },
    },
    "/api/v1/swarm/gitback/users/{name}": {
        "put": {
            "operationId": "gitbackUserSet",
            "summary": "Opt a person (login name) in or out of gitback",
            "security": _ADMIN,
            "parameters": [_path_param("name", _STR)],
            "requestBody": _body(_strict(["gitback"], gitback={"type": "boolean"})),
            "responses": {
                "200": _json(
                    _obj(name=_STR, gitback={"type": "boolean"}, changed={"type": "boolean"}),
                    "the flag as now set",
                ),
                **_errors(400, 401, 413),
            },
        },
    },
}
