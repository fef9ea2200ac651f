"""The OpenAPI 3.1 document served at ``GET /api/v1/openapi.json``.

Written by hand as data, next to (not generated from) the route table in ``api.py``;
the ``/api/v1/swarm`` part is in ``openapi_swarm``. ``tests/server/test_api.py`` checks
that the document and the route table list exactly the same operations.
"""

from __future__ import annotations

from typing import Any

_ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "bad request",
        401: "admin bearer token missing or wrong",
        403: "refused",
        404: "not found",
        409: "conflicts with what is there",
        413: "request body too large",
        415: "wrong content-type",
        500: "the server could not serve it (see the server log)",
        503: "the server's clock is behind its newest record",
        507: "no space left on the server",
    }
    return {str(s): _json(_ERROR_REF, text[s]) for s in statuses}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_ADMIN: list[dict[str, list[str]]] = [{"adminBearer": []}]
_OBJ = "object"

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": _OBJ,
        "required": ["error"],
        "properties": {
            "error": {
                "type": _OBJ,
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "TokenCreate": {
        "type": _OBJ,
        "additionalProperties": False,
        "properties": {
            "ttl_s": {"type": "integer", "minimum": 1, "default": 3600},
            "max_uses": {"type": "integer", "minimum": 1, "default": 1},
            "description": {"type": "string", "maxLength": 200},
        },
    },
    "Token": {
        "type": _OBJ,
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9a-f]{8}$"},
            "token": {"type": "string", "description": "only in the create answer"},
            "description": {"type": "string"},
            "created_at": {"type": "number", "description": "Unix time, seconds"},
            "expires_at": {"type": "number", "description": "Unix time, seconds"},
            "max_uses": {"type": "integer"},
            "uses": {"type": "integer"},
            "revoked_at": {"type": ["number", "null"]},
            "state": {"enum": ["active", "expired", "exhausted", "revoked"]},
        },
    },
    "EnrollRequest": {
        "type": _OBJ,
        "required": ["token", "csr", "hostname"],
        "additionalProperties": False,
        "properties": {
            "token": {"type": "string", "description": "vigo1.<id>.<secret>.<ca-sha256>"},
            "csr": {"type": "string", "description": "PEM CSR, EC P-256 or P-384 key"},
            "hostname": {"type": "string", "maxLength": 253},
        },
    },
    "Enrollment": {
        "type": _OBJ,
        "properties": {
            "uuid": {"type": "string", "format": "uuid"},
            "hostname": {"type": "string"},
            "certificate": {"type": "string", "description": "PEM"},
            "ca_chain": {"type": "array", "items": {"type": "string"}},
            "authority_public_key": {"type": "string", "description": "Ed25519, hex"},
            "checkin_interval_s": {"type": "integer"},
        },
    },
    "Envoy": {
        "type": _OBJ,
        "properties": {
            "uuid": {"type": "string", "format": "uuid"},
            "hostname": {"type": "string"},
            "state": {"enum": ["active", "revoked", "replaced"]},
            "enrolled_at": {"type": "number"},
            "last_checkin": {"type": ["number", "null"]},
            "addresses": {"type": "array", "items": {"type": "string"}},
            "port": {"type": ["integer", "null"]},
            "manifest_version": {"type": ["integer", "null"]},
            "reported_hostname": {"type": ["string", "null"]},
            "state_changed_at": {"type": ["number", "null"]},
            "replaced_by": {"type": ["string", "null"]},
            "serials": {"type": "array", "items": {"type": "string"}},
            "revoked_serials": {"type": "array", "items": {"type": "string"}},
            "token_id": {"type": ["string", "null"]},
        },
    },
    "CheckinRequest": {
        "type": _OBJ,
        "required": ["port"],
        "additionalProperties": False,
        "properties": {
            "addresses": {"type": "array", "maxItems": 32, "items": {"type": "string"}},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "manifest_version": {"type": "integer", "minimum": 0},
            "hostname": {"type": "string", "description": "informational only"},
            "filecast": {"$ref": "#/components/schemas/FilecastProgressList"},
        },
    },
    "Checkin": {
        "type": _OBJ,
        "properties": {
            "peers": {
                "type": "array",
                "items": {
                    "type": _OBJ,
                    "properties": {
                        "uuid": {"type": "string"},
                        "hostname": {"type": "string"},
                        "addresses": {"type": "array", "items": {"type": "string"}},
                        "port": {"type": "integer"},
                    },
                },
            },
            "revoked": {
                "type": _OBJ,
                "properties": {
                    "serials": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "lowercase hex, no 0x",
                    },
                    "uuids": {"type": "array", "items": {"type": "string"}},
                },
            },
            "checkin_interval_s": {"type": "integer"},
            "server_time": {"type": "number"},
            "manifest_version": {
                "type": "integer",
                "description": "the server manifest's version: sync when it differs from yours",
            },
            "gitback": {
                "type": _OBJ,
                "description": "hostname patterns (first match wins, '-' denies) and the "
                "login names opted in to gitback (docs/gitback.md)",
                "properties": {
                    "enabled": {"type": "array", "items": {"type": "string"}},
                    "users": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/health": {
        "get": {
            "operationId": "health",
            "summary": "Liveness and version",
            "security": [],
            "responses": {"200": _json({"type": _OBJ}, "ok")},
        },
    },
    "/api/v1/ca": {
        "get": {
            "operationId": "getCA",
            "security": [],
            "summary": "The fleet CA certificate; envoys pin it by the token's fingerprint",
            "responses": {"200": {"description": "PEM", "content": {"application/x-pem-file": {}}}},
        },
    },
    "/api/v1/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {"200": _json({"type": _OBJ}, "OpenAPI 3.1")},
        },
    },
    "/api/v1/tokens": {
        "post": {
            "operationId": "createToken",
            "summary": "Create a join token",
            "security": _ADMIN,
            "requestBody": _body(_ref("TokenCreate")),
            "responses": {
                "201": _json(_ref("Token"), "the token, with its secret"),
                **_errors(400, 401, 413),
            },
        },
        "get": {
            "operationId": "listTokens",
            "summary": "List join tokens (never secrets)",
            "security": _ADMIN,
            "responses": {
                "200": _json(
                    {
                        "type": _OBJ,
                        "properties": {"tokens": {"type": "array", "items": _ref("Token")}},
                    },
                    "tokens",
                ),
                **_errors(401),
            },
        },
    },
    "/api/v1/tokens/{token_id}": {
        "delete": {
            "operationId": "revokeToken",
            "summary": "Revoke a join token",
            "security": _ADMIN,
            "parameters": [
                {"name": "token_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {"200": _json(_ref("Token"), "revoked"), **_errors(401, 404)},
        },
    },
    "/api/v1/enroll": {
        "post": {
            "operationId": "enroll",
            "security": [],
            "summary": "Trade a join token and a CSR for an envoy certificate",
            "requestBody": _body(_ref("EnrollRequest")),
            "responses": {"201": _json(_ref("Enrollment"), "enrolled"), **_errors(400, 403, 413)},
        },
    },
    "/api/v1/envoys": {
        "get": {
            "operationId": "listEnvoys",
            "summary": "List envoys",
            "security": _ADMIN,
            "responses": {
                "200": _json(
                    {
                        "type": _OBJ,
                        "properties": {"envoys": {"type": "array", "items": _ref("Envoy")}},
                    },
                    "envoys",
                ),
                **_errors(401),
            },
        },
    },
    "/api/v1/envoys/{envoy}": {
        "get": {
            "operationId": "showEnvoy",
            "security": _ADMIN,
            "summary": "One envoy by UUID, or the active envoy of a hostname",
            "parameters": [
                {"name": "envoy", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {"200": _json(_ref("Envoy"), "the envoy"), **_errors(401, 404)},
        },
    },
    "/api/v1/envoys/{envoy_uuid}/revoke": {
        "post": {
            "operationId": "revokeEnvoy",
            "security": _ADMIN,
            "summary": "Revoke an envoy: its serials and UUID join the revocation list",
            "parameters": [
                {
                    "name": "envoy_uuid",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "format": "uuid"},
                }
            ],
            "responses": {"200": _json(_ref("Envoy"), "revoked"), **_errors(400, 401, 404)},
        },
    },
    "/api/v1/checkin": {
        "post": {
            "operationId": "checkin",
            "security": [{"envoyCertificate": []}],
            "summary": "Report addresses; receive peer hints and the revocation list",
            "requestBody": _body(_ref("CheckinRequest")),
            "responses": {
                "200": _json(_ref("Checkin"), "peer hints, revocations"),
                **_errors(400, 403, 413),
            },
        },
    },
}


def openapi_document(version: str) -> dict[str, Any]:
    from .openapi_swarm import PROGRESS_ITEMS, SWARM_PATHS, SWARM_SCHEMAS  # it imports us

    schemas = {**SCHEMAS, **SWARM_SCHEMAS, "FilecastProgressList": PROGRESS_ITEMS}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Vigo server lite",
            "version": version,
            "description": "Enrollment, join tokens, envoys, check-in (docs/server-lite.md); "
            "the filecast authority and seed (docs/filecast.md).",
        },
        "paths": {**PATHS, **SWARM_PATHS},
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "adminBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the contents of <data-dir>/admin.token",
                },
                "envoyCertificate": {
                    "type": "mutualTLS",
                    "description": "an envoy certificate from the fleet CA",
                },
            },
        },
    }
