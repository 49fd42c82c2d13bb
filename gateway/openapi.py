"""The OpenAPI 3.0 document for every endpoint Hearth serves (kept in sync with
the router by tests/test_openapi.py)."""
from __future__ import annotations

ERROR = {"$ref": "#/components/schemas/Error"}


def _err(desc: str) -> dict:
    return {"description": desc, "content": {"application/json": {"schema": ERROR}}}


def _psa_err(desc: str) -> dict:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PSAFailure"}}}}


CID_PARAM = {"name": "cid", "in": "path", "required": True, "schema": {"type": "string"}, "description": "CIDv0 or CIDv1"}
BEARER = [{"bearer": []}]

GATEWAY_PARAMS = [
    CID_PARAM,
    {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["raw", "car"]}},
    {"name": "filename", "in": "query", "schema": {"type": "string"}},
    {"name": "download", "in": "query", "schema": {"type": "boolean"}},
    {"name": "dag-scope", "in": "query", "schema": {"type": "string", "enum": ["block", "entity", "all"]}},
    {"name": "entity-bytes", "in": "query", "schema": {"type": "string", "example": "0:1023"}},
    {"name": "car-version", "in": "query", "schema": {"type": "string", "enum": ["1"]}},
    {"name": "car-order", "in": "query", "schema": {"type": "string", "enum": ["dfs", "unk"]}},
    {"name": "car-dups", "in": "query", "schema": {"type": "string", "enum": ["y", "n"]}},
    {"name": "Accept", "in": "header", "schema": {"type": "string"}},
    {"name": "Range", "in": "header", "schema": {"type": "string"}},
    {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
]

GATEWAY_RESPONSES = {
    "200": {"description": "file bytes, directory listing, raw block or CAR stream"},
    "206": {"description": "a single byte range"},
    "301": {"description": "directory requested without a trailing slash"},
    "304": {"description": "If-None-Match matched the Etag"},
    "400": _err("invalid CID, path or parameter"),
    "404": _err("content not on this node"),
    "412": _err("Cache-Control: only-if-cached and the root block is not local"),
    "416": _err("range not satisfiable"),
    "503": _err("storage engine unavailable (Retry-After)"),
    "504": _err("retrieval timed out"),
}


def _gateway_op(summary: str, extra_params: list | None = None) -> dict:
    return {"summary": summary, "tags": ["gateway"], "parameters": GATEWAY_PARAMS + (extra_params or []),
            "responses": GATEWAY_RESPONSES}


PATH_PARAM = {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}
REQID = {"name": "requestid", "in": "path", "required": True, "schema": {"type": "string"}}


def openapi_document() -> dict:
    record = {"$ref": "#/components/schemas/ContentRecord"}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Hearth", "version": "0.1.0",
                 "description": "Self-hosted IPFS node: upload API, IPFS path/trustless gateway, Pinning Services API."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "ContentRecord": {"type": "object", "required": ["cid", "size", "name", "created_at", "pinned"],
                                  "properties": {"cid": {"type": "string"}, "size": {"type": "integer"},
                                                 "name": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
                                                 "pinned": {"type": "boolean"},
                                                 "removed_at": {"type": "string", "format": "date-time"}}},
                "PSAFailure": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["reason"],
                    "properties": {"reason": {"type": "string"}, "details": {"type": "string"}}}}},
                "Pin": {"type": "object", "required": ["cid"], "properties": {
                    "cid": {"type": "string"}, "name": {"type": "string", "maxLength": 255},
                    "origins": {"type": "array", "items": {"type": "string"}, "maxItems": 20, "uniqueItems": True},
                    "meta": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "PinStatus": {"type": "object", "required": ["requestid", "status", "created", "pin", "delegates"],
                              "properties": {"requestid": {"type": "string"},
                                             "status": {"type": "string", "enum": ["queued", "pinning", "pinned", "failed"]},
                                             "created": {"type": "string", "format": "date-time"},
                                             "pin": {"$ref": "#/components/schemas/Pin"},
                                             "delegates": {"type": "array", "items": {"type": "string"}},
                                             "info": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "PinResults": {"type": "object", "required": ["count", "results"], "properties": {
                    "count": {"type": "integer"}, "results": {"type": "array", "items": {"$ref": "#/components/schemas/PinStatus"}}}},
            },
        },
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "tags": ["ops"], "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "Readiness (database and storage engine)", "tags": ["ops"],
                                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "tags": ["ops"], "responses": {"200": {"description": "text exposition format"}}}},
            "/openapi.json": {"get": {"summary": "This document", "tags": ["ops"], "responses": {"200": {"description": "OpenAPI 3"}}}},
            "/api/v1/content": {
                "post": {
                    "summary": "Upload files (multipart 'file' parts, a raw body, or a CAR) and pin them",
                    "tags": ["content"], "security": BEARER,
                    "parameters": [
                        {"name": "cid_version", "in": "query", "schema": {"type": "integer", "enum": [0, 1], "default": 1}},
                        {"name": "raw_leaves", "in": "query", "schema": {"type": "boolean"}},
                        {"name": "wrap", "in": "query", "schema": {"type": "boolean", "default": False}},
                        {"name": "filename", "in": "query", "schema": {"type": "string"}},
                    ],
                    "requestBody": {"content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                        "application/vnd.ipld.car": {"schema": {"type": "string", "format": "binary"}}}},
                    "responses": {"201": {"description": "created", "content": {"application/json": {"schema": record}}},
                                  "400": _err("bad input"), "401": _err("missing or invalid token"),
                                  "413": _err("over max_upload_bytes"), "503": _err("storage engine unavailable")},
                },
                "get": {
                    "summary": "The caller's content records, newest first", "tags": ["content"], "security": BEARER,
                    "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20}},
                                   {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "a page", "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"results": {"type": "array", "items": record},
                                                         "next_cursor": {"type": "string", "nullable": True}}}}}},
                                  "400": _err("bad parameter"), "401": _err("missing or invalid token")},
                },
            },
            "/api/v1/content/{cid}": {
                "parameters": [CID_PARAM],
                "get": {"summary": "One content record", "tags": ["content"], "security": BEARER,
                        "responses": {"200": {"description": "the record", "content": {"application/json": {"schema": record}}},
                                      "400": _err("invalid CID"), "401": _err("unauthorized"), "404": _err("no record")}},
                "delete": {"summary": "Unpin; the record is kept, marked removed", "tags": ["content"], "security": BEARER,
                           "responses": {"200": {"description": "the removed record", "content": {"application/json": {"schema": record}}},
                                         "400": _err("invalid CID"), "401": _err("unauthorized"), "404": _err("no record")}},
            },
            "/ipfs/": {"get": {"summary": "Missing CID", "tags": ["gateway"], "responses": {"400": _err("a CID is required")}}},
            "/ipfs/{cid}": {"get": _gateway_op("Content by CID"), "head": _gateway_op("Headers of content by CID")},
            "/ipfs/{cid}/{path}": {"get": _gateway_op("Content by CID and path", [PATH_PARAM]),
                                   "head": _gateway_op("Headers of content by CID and path", [PATH_PARAM])},
            "/psa/pins": {
                "get": {"summary": "List pin objects", "tags": ["pinning"], "security": BEARER,
                        "parameters": [
                            {"name": "cid", "in": "query", "schema": {"type": "string"}, "description": "comma-separated, up to 10"},
                            {"name": "name", "in": "query", "schema": {"type": "string"}},
                            {"name": "match", "in": "query", "schema": {"type": "string", "enum": ["exact", "iexact", "partial", "ipartial"]}},
                            {"name": "status", "in": "query", "schema": {"type": "string"}, "description": "comma-separated"},
                            {"name": "before", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                            {"name": "after", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10}},
                            {"name": "meta", "in": "query", "schema": {"type": "string"}, "description": "JSON object"}],
                        "responses": {"200": {"description": "PinResults", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PinResults"}}}},
                                      "400": _psa_err("bad request"), "401": _psa_err("unauthorized")}},
                "post": {"summary": "Add pin object", "tags": ["pinning"], "security": BEARER,
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pin"}}}},
                         "responses": {"202": {"description": "PinStatus", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PinStatus"}}}},
                                       "400": _psa_err("bad request"), "401": _psa_err("unauthorized")}},
            },
            "/psa/pins/{requestid}": {
                "parameters": [REQID],
                "get": {"summary": "Get pin object", "tags": ["pinning"], "security": BEARER,
                        "responses": {"200": {"description": "PinStatus"}, "401": _psa_err("unauthorized"), "404": _psa_err("not found")}},
                "post": {"summary": "Replace pin object", "tags": ["pinning"], "security": BEARER,
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pin"}}}},
                         "responses": {"202": {"description": "PinStatus"}, "400": _psa_err("bad request"),
                                       "401": _psa_err("unauthorized"), "404": _psa_err("not found")}},
                "delete": {"summary": "Remove pin object", "tags": ["pinning"], "security": BEARER,
                           "responses": {"202": {"description": "removed"}, "401": _psa_err("unauthorized"), "404": _psa_err("not found")}},
            },
        },
    }
